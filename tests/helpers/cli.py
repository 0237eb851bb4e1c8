"""The `ifexp` command as a subprocess, the way a user runs it."""

import os
import subprocess
import sys

from helpers import REPO

IFEXP = [sys.executable, "-m", "ifexp.cli"]


def run_ifexp(*args, cwd=REPO, check=False):
    env = {**os.environ, "WANDB_SILENT": "true"}
    result = subprocess.run([*IFEXP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"ifexp {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result
