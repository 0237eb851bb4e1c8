"""Every artifact is identified by what produced it: its config slice, its inputs' digests and
the code that made it (tests/pipeline/test_code_version.py: edits in a copy of the tree). Nothing
is reused that could differ; nothing that cannot differ is recomputed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.data import EASY_TRAINING, read_records
from helpers.jobs import run

from ifexp.cache import STAGES, Stage, config_slice

# A small job on the tiny model; high_harm needs theta*, its graded answers, both feature
# stores and the scores, so every stage of the chain runs.
SMALL = [
    "experiment=smoke",
    *EASY_TRAINING,
    "eval.benchmarks=[gsm_symbolic]",
    "eval.max_examples=4",
    "eval.max_new_tokens=12",
    "queries.max_new_tokens=12",
    "queries.n_samples=2",
    "dataset.n_val=8",
    "logger=none",
]


def pass_at_1_of(artifact: str) -> float:
    records = read_records(Path(artifact) / "generations.jsonl")
    return sum(sum(r["correct"]) / len(r["correct"]) for r in records) / len(records)


def artifacts(metrics: dict) -> dict[str, str]:
    return {k: v for k, v in metrics.items() if k.startswith("artifact/")}


def test_full_finetuning_evaluates_each_model_from_its_own_generations(easy_cot, tmp_path):
    """train=full: the pruned, Random and full-data models are three artifacts, evaluated three
    times (a folder's name, `weights`, once made them one eval artifact: delta 0 by construction)."""
    overrides = [*SMALL, f"dataset.path={easy_cot}", "pruning=perplexity", f"paths.cache_dir={tmp_path}/cache"]
    metrics = run(overrides, tmp_path / "run")
    models = ("pruned", "random", "full")
    sft = {m: metrics[f"artifact/sft_{m}"] for m in models}
    evals = {m: metrics[f"artifact/eval/{m}/gsm_symbolic"] for m in models}
    assert len(set(sft.values())) == 3
    assert len(set(evals.values())) == 3, evals
    for name in models:
        key = json.loads((Path(evals[name]) / "manifest.json").read_text())["key"]
        assert key["model"]["sft"] == Path(sft[name]).name  # evaluated the model it names
        prefix = "" if name == "pruned" else f"{name}_"
        assert metrics[f"{prefix}pass@1/gsm_symbolic"] == pytest.approx(pass_at_1_of(evals[name]))
        # every evaluation records how many answers the token limit cut (12 new tokens: some)
        records = read_records(Path(evals[name]) / "generations.jsonl")
        n_capped = sum(sum(r["length_capped"]) for r in records)
        assert metrics[f"{prefix}eval/gsm_symbolic/n_length_capped"] == n_capped


def test_stage_keys_hold_code_and_library_versions(tmp_path):
    stage = Stage("probe", "ifexp.stages.eval")
    try:
        version = stage.version()
        assert version["code"]["ifexp.evaluate.grading"] and version["code"]["ifexp.stages.eval"]
        assert version["libraries"]["torch"].startswith("2.") and version["python"].startswith("3.")
        assert stage.locate(tmp_path, {"a": 1}) != stage.locate(tmp_path, {"a": 2})
        assert stage.find(tmp_path, {"a": 1}) is None
        built = stage.get(tmp_path, {"a": 1}, lambda out: {"n": 1})
        assert stage.find(tmp_path, {"a": 1}) == built and built.manifest()["n"] == 1
        assert built.manifest()["key"]["version"] == json.loads(json.dumps(version))
        with pytest.raises(ValueError, match="already declared"):
            Stage("probe", "ifexp.stages.sft")
    finally:
        STAGES.pop("probe")


@dataclass
class _Options:
    name: str = "x"
    lr: float = 1.0
    new_field: list[int] = field(default_factory=list)


def test_config_slices_count_new_fields_and_name_their_exclusions():
    assert config_slice(_Options(), exclude=("name",)) == {"lr": 1.0, "new_field": []}
    with pytest.raises(ValueError, match="no field"):
        config_slice(_Options(), exclude=("nmae",))


def test_over_long_queries_are_dropped_and_counted_not_the_end_of_the_job(easy_cot, tmp_path):
    """Validation questions whose prompt fills model.max_seq_len leave theta*'s answers no room for
    a gradient: those queries are dropped and counted, as over-long training traces are."""
    val = tmp_path / "val.jsonl"
    with val.open("w") as handle:
        for i in range(8):
            question = f"Add {i} and 7." + (" Think of the numbers carefully." * 80 if i < 3 else "")
            record = {"id": f"val-{i}", "question": question, "cot": f"#### {i + 7}", "answer": str(i + 7)}
            handle.write(json.dumps(record) + "\n")
    overrides = [
        *SMALL,
        f"dataset.path={easy_cot}",
        f"dataset.val_path={val}",
        "pruning=high_harm",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    metrics = run(overrides, tmp_path / "run")
    assert metrics["queries/n_rejected"] == 3 * 2  # 3 long questions x 2 answers each
    assert metrics["queries/n_correct"] + metrics["queries/n_incorrect"] == 5 * 2
