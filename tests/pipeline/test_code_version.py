"""A stage's code version is computed from the code it can run (ifexp.code_version), never listed
by hand: a module a stage starts to import is in its key, an edit to any module it can run changes
its key, and an edit elsewhere (the report, the CLI) changes none."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data import EASY_TRAINING
from helpers.tree import append_statement, copy_tree, run_in_tree

import ifexp.stages
from ifexp.cache import STAGES
from ifexp.code_version import PACKAGE_DIR, code_version, import_closure, module_digest

STAGE_MODULES = [f"ifexp.stages.{m.name}" for m in pkgutil.iter_modules(ifexp.stages.__path__)]
# Prints {stage: its code version} for every stage module of the tree on PYTHONPATH.
VERSIONS = """
import importlib, json, pkgutil
import ifexp.stages
from ifexp.cache import STAGES
for m in pkgutil.iter_modules(ifexp.stages.__path__):
    importlib.import_module(f"ifexp.stages.{m.name}")
print(json.dumps({name: stage.version() for name, stage in sorted(STAGES.items())}))
"""


def stage_versions(tree: Path) -> dict[str, dict]:
    result = run_in_tree(tree, ["-c", VERSIONS])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def registered_stages() -> dict:
    for module in STAGE_MODULES:
        importlib.import_module(module)
    return dict(STAGES)


def test_every_stage_module_declares_its_stage_and_its_version_is_its_import_closure():
    stages = registered_stages()
    declared = {stage.module for stage in stages.values()}
    # every stage is declared by a module of ifexp.stages (the shared preconditioner fit is not a stage)
    assert declared <= set(STAGE_MODULES) and len(declared) == len(stages) >= 10
    for stage in stages.values():
        closure = import_closure(stage.module)
        assert set(stage.version()["code"]) == closure
        assert {stage.module, "ifexp", "ifexp.stages", "ifexp.cache"} <= closure
        assert not any(m == "ifexp.cli" or m.startswith("ifexp.report") for m in closure), stage.name


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_what_a_stage_imports_when_it_runs_is_in_its_static_closure(module):
    """Importing a stage module in a fresh process loads only modules its version covers (the
    imports inside functions, which run when the build runs, are in the closure too)."""
    probe = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.split('.')[0] == 'ifexp'))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert module in loaded and set(loaded) <= import_closure(module)


def test_libraries_are_what_the_closure_imports_and_all_they_require():
    libraries = code_version("ifexp.stages.sft")["libraries"]
    for distribution in ("torch", "transformers", "peft", "accelerate"):
        assert distribution in libraries, distribution
    # transformers runs tokenizers and safetensors without ifexp importing them
    assert {"tokenizers", "safetensors"} <= set(libraries)
    grading = code_version("ifexp.stages.eval")["libraries"]
    assert {"math-verify", "sympy"} <= set(grading)


def test_module_digest_sees_code_but_not_comments(tmp_path, monkeypatch):
    import ifexp.code_version as code_version_module

    (tmp_path / "ifexp").mkdir()
    module = tmp_path / "ifexp" / "probe.py"
    monkeypatch.setattr(code_version_module, "PACKAGE_DIR", tmp_path / "ifexp")
    digests = []
    for source in (
        "def grade(x):\n    return x > 0\n",
        "# a comment\ndef grade(x):\n\n    return x > 0  # why\n",
        "def grade(x):\n    return x >= 0\n",
    ):
        module.write_text(source)
        module_digest.cache_clear()
        digests.append(module_digest("ifexp.probe"))
    module_digest.cache_clear()
    assert digests[0] == digests[1] != digests[2]


def test_an_import_a_stage_gains_and_an_edit_anywhere_in_its_closure_change_its_key(tmp_path):
    tree = copy_tree(tmp_path / "tree")
    before = stage_versions(tree)
    closures = {name: set(version["code"]) for name, version in before.items()}

    # a module every stage starts to import, half of them inside a function (run only when the
    # build runs): in every key, no list edited
    (tree / "ifexp" / "probe_added.py").write_text("VALUE = 1\n")
    for index, module in enumerate(STAGE_MODULES):
        path = tree / Path(*module.split(".")).with_suffix(".py")
        statement = "import ifexp.probe_added  # noqa\n"
        added = statement if index % 2 else f"def _probe():\n    {statement}"
        path.write_text(path.read_text() + "\n" + added)
    gained = stage_versions(tree)
    assert all("ifexp.probe_added" in version["code"] for version in gained.values())

    # an edit to a module some stages can run changes exactly their keys; the report and the
    # CLI are in no stage's closure
    tree = copy_tree(tmp_path / "tree2")
    edits = {"ifexp/evaluate/grading.py": "ifexp.evaluate.grading", "ifexp/prompts.py": "ifexp.prompts"}
    for path, module in edits.items():
        append_statement(tree, path)
        after = stage_versions(tree)
        changed = {name for name in before if after[name] != before[name]}
        assert changed == {name for name, closure in closures.items() if module in closure}, module
        assert changed, f"no stage runs {module}?"
        before = after
    report = "ifexp/report.py" if (tree / "ifexp" / "report.py").is_file() else "ifexp/report/__init__.py"
    for path in (report, "ifexp/cli.py"):
        append_statement(tree, path)
        assert stage_versions(tree) == before, path


def test_the_code_version_reads_the_package_that_runs():
    assert PACKAGE_DIR == Path(ifexp.stages.__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# End to end: a job rerun after an edit, in a copy of the tree

JOB = [
    "-m",
    "ifexp.cli",
    "experiment=smoke",
    *EASY_TRAINING,
    "train.epochs=1",
    "pruning=random",
    "pruning.fraction=0.25",
    "eval.benchmarks=[basic_arithmetic]",
    "eval.max_examples=4",
    "eval.max_new_tokens=8",
    "eval.eval_full=false",
    "logger=none",
]


def artifact_counts(cache: Path) -> dict[str, int]:
    return {
        stage.name: sum(1 for p in stage.iterdir() if p.is_dir() and not p.name.startswith("."))
        for stage in cache.iterdir()
    }


def test_an_edit_to_the_eval_module_rebuilds_the_evaluations_and_an_edit_to_the_report_nothing(easy_cot, tmp_path):
    tree = copy_tree(tmp_path / "tree")
    cache = tmp_path / "cache"

    def rerun(number: int) -> dict[str, int]:
        args = [*JOB, f"dataset.path={easy_cot}", f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path}/run{number}"]
        result = run_in_tree(tree, args)
        assert result.returncode == 0, result.stderr[-3000:]
        return artifact_counts(cache)

    first = rerun(0)
    # the pruned model (also Random's: pruning=random) and the base model, on basic_arithmetic and the
    # in-domain split (experiment=smoke holds out dataset.n_test=8)
    assert first["eval"] == 2 * 2
    report = "ifexp/report.py" if (tree / "ifexp" / "report.py").is_file() else "ifexp/report/__init__.py"
    append_statement(tree, report)
    assert rerun(1) == first
    append_statement(tree, "ifexp/stages/eval.py")  # where the eval record and pass@1 are built
    assert rerun(2) == {**first, "eval": 2 * first["eval"]}
