"""The `ifexp` entry point: composition, one-line errors, and a full tiny run through the cache."""

import json
import os
import subprocess
import sys

import pytest
from helpers.cli import run_ifexp
from omegaconf import OmegaConf

from ifexp.report import write_report


def test_cfg_job_prints_the_composed_config():
    result = run_ifexp("--cfg", "job", check=True)
    assert "model:\n  name: smollm2_135m" in result.stdout
    assert "engine:\n  name: vllm" in result.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=nope", "Could not find 'model/nope'"),
        ("train.lr=abc", "Value 'abc' of type 'str' could not be converted to Float full_key: train.lr"),
        ("train.lrr=1", "Key 'lrr' not in 'TrainConfig'"),
        ("engine.name=foo", "engine.name='foo': expected one of vllm, hf"),
        ("estimator.loss_weighting=lines", "estimator.loss_weighting='lines': expected one of token_mean, step_mean"),
        ("dataset=jsonl", "dataset=jsonl needs dataset.path=FILE"),
    ],
)
def test_bad_config_fails_with_one_line(override, message, tmp_path):
    result = run_ifexp(override, "logger=none", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ifexp: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_jsonl_line_fails_with_file_and_line(tmp_path):
    data = tmp_path / "cot.jsonl"
    data.write_text('{"id": "a", "question": "q", "cot": "c", "answer": "1"}\n{"id": "b", "question": "q"\n')
    result = run_ifexp(
        "experiment=smoke",
        "dataset=jsonl",
        f"dataset.path={data}",
        f"paths.cache_dir={tmp_path}/cache",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"ifexp: error: {data}:2: not valid JSON (Expecting ',' delimiter)"
    assert not list((tmp_path / "cache").glob("dataset/*/manifest.json"))


# Runs ifexp with ifexp.pipeline replaced by a stand-in whose run_job crashes deep inside a job
# (for pruning=random) and otherwise leaves a mark: a real job's unexpected error, in seconds.
CRASHING_PIPELINE = """
import sys, types
from pathlib import Path


def exploding_stage():
    raise RuntimeError("boom")


def run_job(cfg, run_dir, tracker=None, config_digest=None):
    if cfg.pruning.strategy == "random":
        exploding_stage()
    (Path(run_dir) / "ran").write_text("ok")
    return {}


sys.modules["ifexp.pipeline"] = types.SimpleNamespace(run_job=run_job)
from ifexp.cli import main

main()
"""
CRASH_JOB = ["experiment=smoke", "logger=none"]


def run_crashing(tmp_path, *args, full_error=False):
    shim = tmp_path / "crashing_ifexp.py"
    shim.write_text(CRASHING_PIPELINE)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"WANDB_SILENT": "true", **({"HYDRA_FULL_ERROR": "1"} if full_error else {})})
    command = [sys.executable, str(shim), *args, *CRASH_JOB, f"paths.cache_dir={tmp_path}/cache"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_unexpected_crash_leaves_its_traceback_in_run_log_and_one_line_on_the_terminal(tmp_path):
    result = run_crashing(tmp_path, "pruning=random", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 1
    run_log = (tmp_path / "run" / "run.log").read_text()
    assert "Traceback (most recent call last)" in run_log and "exploding_stage" in run_log
    assert "RuntimeError: boom" in run_log
    terminal = result.stdout + result.stderr
    assert "Traceback" not in terminal
    mentions = [line for line in terminal.splitlines() if "boom" in line]
    assert mentions == result.stderr.strip().splitlines(), terminal[-3000:]
    assert len(mentions) == 1
    line = mentions[0]
    assert line.startswith("ifexp: error: ") and "RuntimeError: boom" in line and "exploding_stage" in line
    assert str(tmp_path / "run" / "run.log") in line


def test_full_error_puts_the_traceback_on_the_terminal_too(tmp_path):
    result = run_crashing(tmp_path, "pruning=random", f"hydra.run.dir={tmp_path}/run", full_error=True)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr and "exploding_stage" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "RuntimeError: boom"
    assert "exploding_stage" in (tmp_path / "run" / "run.log").read_text()


def test_a_crashed_job_does_not_stop_the_sweep_and_keeps_its_traceback(tmp_path):
    result = run_crashing(tmp_path, "-m", "pruning=random,high_harm", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert (tmp_path / "sweep" / "1" / "ran").is_file(), "the sweep stopped at the crashed job"
    run_log = (tmp_path / "sweep" / "0" / "run.log").read_text()
    assert "Traceback (most recent call last)" in run_log and "exploding_stage" in run_log
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ifexp: error: ") and "RuntimeError: boom" in last
    assert str(tmp_path / "sweep" / "0" / "run.log") in last


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=llama3_8b_instruct", "dataset=limo", "eval=paper", "train.mixed_precision=bf16"],
        ["model=qwen25_math_7b_instruct", "dataset=limo", "eval=paper", "train=full"],
        ["dataset=jsonl", "dataset.path=/data/cot.jsonl", "engine=hf", "logger=none"],
    ],
)
def test_paper_scale_configs_compose(overrides):
    result = run_ifexp(*overrides, "--cfg", "job", check=True)
    assert "name:" in result.stdout


def test_tiny_run_end_to_end_then_fully_cached(tmp_path):
    common = ["experiment=smoke", f"paths.cache_dir={tmp_path}/cache", "logger=wandb"]
    run_ifexp(*common, f"hydra.run.dir={tmp_path}/first", check=True)
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    for bench in ("gsm_symbolic", "basic_arithmetic"):
        assert 0.0 <= metrics[f"pass@1/{bench}"] <= 1.0
        assert 0.0 <= metrics[f"base_pass@1/{bench}"] <= 1.0
        assert metrics[f"n_problems/{bench}"] == 8
    assert metrics["n_train"] == 32 and metrics["n_train_kept"] == 24
    assert metrics["strategy"] == "high_harm" and metrics["queries/n_correct"] == 0
    assert metrics["n_train_flawed"] == 8
    assert (tmp_path / "first" / "run.log").is_file()
    assert list((tmp_path / "first" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (tmp_path / "first" / "generations" / "pruned_gsm_symbolic.jsonl").is_file()
    assert (tmp_path / "first" / "scores.csv").is_file() and (tmp_path / "first" / "selection.json").is_file()

    manifests = sorted((tmp_path / "cache").glob("*/*/manifest.json"))
    before = {path: path.stat().st_mtime_ns for path in manifests}
    second = run_ifexp(*common, f"hydra.run.dir={tmp_path}/second", check=True)
    assert "computing" not in second.stdout + second.stderr
    assert {p: p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").glob("*/*/manifest.json"))} == before
    again = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert {k: v for k, v in again.items() if "pass@1" in k} == {k: v for k, v in metrics.items() if "pass@1" in k}

    # A job of another config run into the first job's folder is refused before it writes anything
    # there; the first job's outputs and .hydra/ stay as they were, and its report reads them.
    first = tmp_path / "first"
    outputs = ["metrics.json", "selection.json", "scores.csv", ".hydra/config.yaml", ".hydra/overrides.yaml"]
    before = {name: (first / name).read_bytes() for name in outputs}
    other = run_ifexp(*common, f"hydra.run.dir={first}", "pruning.fraction=0.5")
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        f"ifexp: error: {first} holds a finished job of another config (pruning.fraction: 0.25 -> 0.5); "
        "refusing to write over it: choose another hydra.run.dir, or hydra.sweep.dir / hydra.sweep.subdir "
        "for a multirun"
    ]
    assert {name: (first / name).read_bytes() for name in outputs} == before
    assert "refusing to write over it" in (first / "run.log").read_text()
    assert "high_harm" in write_report(first).read_text()
    # the same config again is the same job: allowed (every stage from the cache)
    run_ifexp(*common, f"hydra.run.dir={first}", check=True)
    assert json.loads((first / "metrics.json").read_text())["config_digest"] == metrics["config_digest"]


@pytest.mark.slow
def test_embedded_default_with_vllm(tmp_path):
    """The default job at reduced size: SmolLM2-135M from the GGUF, LoRA fine-tuning on leg_counting,
    vLLM evaluation on its own held-out problems."""
    run_ifexp(
        "dataset.n_train=48",
        "dataset.n_test=16",
        "pruning=none",
        "logger=none",
        f"hydra.run.dir={tmp_path}/run",
        check=True,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"pass@1/leg_counting", "base_pass@1/leg_counting"} <= metrics.keys()
    assert not any(key.startswith("pass@1/") and key != "pass@1/leg_counting" for key in metrics)
    assert metrics["train/final_loss"] < metrics["train/first_loss"]


def test_a_second_sweep_into_a_sweep_dir_keeps_the_earlier_ones_multirun_yaml(tmp_path):
    sweep = tmp_path / "sweep"
    # each job fails at once (no dataset.path): Hydra has written multirun.yaml by then
    for seed in (0, 1, 2):
        result = run_ifexp("-m", "dataset=jsonl", f"seed={seed}", "logger=none", f"hydra.sweep.dir={sweep}")
        assert "dataset=jsonl needs dataset.path=FILE" in result.stderr
    seeds = {
        path.name: [o for o in OmegaConf.load(path).hydra.overrides.task if o.startswith("seed=")]
        for path in sweep.glob("multirun*.yaml")
    }
    assert seeds == {"multirun.1.yaml": ["seed=0"], "multirun.2.yaml": ["seed=1"], "multirun.yaml": ["seed=2"]}
    assert f"ifexp: {sweep} holds an earlier sweep: its multirun.yaml is kept as multirun.2.yaml" in result.stderr
