"""The `ifexp` entry point: composition, one-line errors, and a full tiny run through the cache."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

IFEXP = [sys.executable, "-m", "ifexp.cli"]


def run_ifexp(*args, cwd=REPO, check=False):
    env = {**os.environ, "WANDB_SILENT": "true"}
    result = subprocess.run([*IFEXP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"ifexp {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


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


@pytest.mark.slow
def test_embedded_default_with_vllm(tmp_path):
    """The demo at reduced size: SmolLM2-135M from the GGUF, LoRA fine-tuning, vLLM evaluation."""
    run_ifexp(
        "dataset.n_train=48",
        "pruning=none",
        "eval.max_examples=16",
        "eval.max_new_tokens=160",
        "logger=none",
        f"hydra.run.dir={tmp_path}/run",
        check=True,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"pass@1/{b}" for b in ("gsm_symbolic", "asdiv", "champ", "basic_arithmetic")} <= metrics.keys()
    assert metrics["train/final_loss"] < metrics["train/first_loss"]
