"""SIGKILL during and between stages: the rerun finishes, recomputes no finished stage, and
gives the results of an uninterrupted run with the same seed. The same config and seed give
byte-identical scores.csv and selection.json (determinism on CPU)."""

import json
import os
import signal

import pytest
from helpers import REPO
from helpers.cli import IFEXP
from helpers.data import EASY_TRAINING

# In pipeline order. A fault fires at the first *build* of its stage in a run, so once theta*
# exists the later "sft" faults hit the pruned model and Random's, and the last "eval" fault
# hits the benchmark evaluation rather than the query generations.
FAULTS = [
    "dataset:during",
    "base_model:during",
    "sft:during",
    "sft:after",
    "eval:during",
    "features:during",
    "features:after",
    "scores:during",
    "scores:after",
    "perplexity:during",
    "sft:during",
    "sft:after",
    "eval:during",
]
# The default suite kills five times (one stage each of the chain's kinds, during and after);
# `pytest -m slow` runs all thirteen.
QUICK_FAULTS = ["sft:during", "features:after", "scores:during", "sft:during", "eval:during"]
OUTPUTS = ("scores.csv", "selection.json")


def job(easy_cot, cache, run, fault=None):
    import subprocess

    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("IFEXP_FAULT", None)
    if fault:
        env["IFEXP_FAULT"] = fault
    args = [*IFEXP, "experiment=smoke", *EASY_TRAINING, f"dataset.path={easy_cot}", "pruning=combined", "logger=none"]
    args += [f"paths.cache_dir={cache}", f"hydra.run.dir={run}"]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def artifacts(cache):
    """The visible artifact folders (temp folders of builds in progress start with a dot)."""
    return [folder for folder in cache.glob("*/*") if folder.is_dir() and not folder.name.startswith(".")]


def snapshot(cache):
    return {folder: (folder / "manifest.json").stat().st_mtime_ns for folder in artifacts(cache)}


def results(run):
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if "pass@1" in k or k.startswith(("delta", "flaw/", "queries/"))}


@pytest.fixture(scope="module")
def reference(easy_cot, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    result = job(easy_cot, root / "cache", root / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.mark.parametrize(
    "faults", [pytest.param(QUICK_FAULTS, id="quick"), pytest.param(FAULTS, id="every-stage", marks=pytest.mark.slow)]
)
def test_kill_during_and_between_stages_then_resume(easy_cot, reference, tmp_path, faults):
    cache = tmp_path / "cache"
    for number, fault in enumerate(faults):
        before = snapshot(cache)
        killed = job(easy_cot, cache, tmp_path / f"killed-{number}", fault)
        assert killed.returncode == -signal.SIGKILL, f"{fault} did not fire:\n{killed.stderr[-2000:]}"
        after = snapshot(cache)
        # nothing finished was recomputed, the killed stage made progress or was just killed
        assert {path: after[path] for path in before} == before, f"{fault}: a finished stage was recomputed"
        if fault.endswith(":after"):
            assert len(after) > len(before)
        # no half-built artifact is visible as one
        assert all((folder / "manifest.json").is_file() for folder in artifacts(cache))
    before = snapshot(cache)
    final = job(easy_cot, cache, tmp_path / "final")
    assert final.returncode == 0, final.stderr[-3000:]
    assert {path: snapshot(cache)[path] for path in before} == before
    assert not list(cache.glob("*/.tmp-*")), "temp folders of killed builds were not cleaned up"
    assert results(tmp_path / "final") == results(reference)
    for name in OUTPUTS:
        assert (tmp_path / "final" / name).read_bytes() == (reference / name).read_bytes()


def test_same_config_and_seed_give_identical_scores_and_selection(easy_cot, reference, tmp_path):
    again = job(easy_cot, tmp_path / "cache", tmp_path / "run")  # a fresh cache: everything recomputed
    assert again.returncode == 0, again.stderr[-3000:]
    for name in OUTPUTS:
        assert (tmp_path / "run" / name).read_bytes() == (reference / name).read_bytes()
    assert results(tmp_path / "run") == results(reference)
