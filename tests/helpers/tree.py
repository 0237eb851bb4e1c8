"""A copy of the source tree, to edit code and watch what the cache does (a stage's code version
is read from the files that run, so only a real edit shows it)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO

# what `python -m ifexp.cli` reads from the tree: the package, the config groups and the sweeps
TREE_PARTS = ("ifexp", "conf", "sweeps")


def copy_tree(destination: Path) -> Path:
    for part in TREE_PARTS:
        shutil.copytree(REPO / part, destination / part, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def append_statement(tree: Path, module_file: str) -> None:
    """An edit of the code (not a comment): one more statement at the end of the module."""
    path = tree / module_file
    path.write_text(path.read_text() + "\n_EDITED_FOR_A_TEST = 1\n")


def run_in_tree(tree: Path, args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    """`python ARGS` with the tree's ifexp first on the path (it wins over the installed one)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
