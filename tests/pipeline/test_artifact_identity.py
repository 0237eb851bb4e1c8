"""Every artifact is identified by what produced it: its config slice, its inputs' digests and
the code that made it. Nothing is reused that could differ; nothing that cannot differ is
recomputed."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.data import EASY_TRAINING, read_records
from helpers.jobs import run

from ifexp import cache
from ifexp.cache import Stage, config_slice, module_digest

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


def artifacts_before_and_after_an_edit(module: str, easy_cot, tmp_path, monkeypatch):
    """The artifacts of one high_harm job, then of the same job after `module`'s code "changed"
    (its digest, as an edit would change it)."""
    overrides = [*SMALL, f"dataset.path={easy_cot}", "pruning=high_harm", f"paths.cache_dir={tmp_path}/cache"]
    before = artifacts(run(overrides, tmp_path / "before"))
    pretend_edited(module, monkeypatch)
    return before, artifacts(run(overrides, tmp_path / "after"))


def pretend_edited(module: str, monkeypatch) -> None:
    edited = module_digest(module) + "-edited"
    original = cache.module_digest
    monkeypatch.setattr(cache, "module_digest", lambda m: edited if m == module else original(m))


def test_a_changed_grader_recomputes_the_evaluations_and_nothing_else(easy_cot, tmp_path, monkeypatch):
    before, after = artifacts_before_and_after_an_edit("ifexp.evaluate.grading", easy_cot, tmp_path, monkeypatch)

    assert before.keys() == after.keys()
    changed = {k for k in before if before[k] != after[k]}
    # theta*'s graded answers and every benchmark evaluation; the gradients of theta*'s answers do
    # not depend on their grades, and these grades did not change, so features and scores stay
    assert changed == {"artifact/queries"} | {k for k in before if k.startswith("artifact/eval/")}
    for key in ("artifact/dataset", "artifact/base_model", "artifact/sft_full", "artifact/sft_pruned"):
        assert before[key] == after[key]


def test_a_changed_prompt_recomputes_what_encodes_a_prompt_but_not_the_data(easy_cot, tmp_path, monkeypatch):
    before, after = artifacts_before_and_after_an_edit("ifexp.prompts", easy_cot, tmp_path, monkeypatch)

    # the tiny model's tokenizer is trained on prompts, so with it even the base model changes;
    # the data do not
    unchanged = {k for k in before if before[k] == after[k]}
    assert unchanged == {"artifact/dataset"}


def test_exactly_the_stages_that_encode_a_prompt_name_the_prompt_code(monkeypatch):
    from ifexp import pipeline
    from ifexp.models import BASE_MODEL

    stages = {
        s.name: s
        for s in (BASE_MODEL, pipeline.DATASET, pipeline.SFT, pipeline.EVAL, pipeline.FEATURES, pipeline.SCORES)
        + (pipeline.SELF_INFLUENCE, pipeline.PERPLEXITY, pipeline.EMBEDDING)
    }
    before = {name: stage.version() for name, stage in stages.items()}
    pretend_edited("ifexp.prompts", monkeypatch)
    changed = {name for name, stage in stages.items() if stage.version() != before[name]}
    assert changed == {"sft", "eval", "features", "perplexity"}


def test_module_digest_sees_code_but_not_comments(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "ifexp_probe_module.py"
    digests = []
    for source in (
        "def grade(x):\n    return x > 0\n",
        "# a comment\ndef grade(x):\n\n    return x > 0  # why\n",
        "def grade(x):\n    return x >= 0\n",
    ):
        module.write_text(source)
        module_digest.cache_clear()
        digests.append(module_digest("ifexp_probe_module"))
    module_digest.cache_clear()
    sys.modules.pop("ifexp_probe_module", None)
    assert digests[0] == digests[1] != digests[2]


def test_stage_keys_hold_code_and_library_versions(tmp_path):
    stage = Stage("probe", ("ifexp.evaluate.grading",), ("torch", "no-such-library"))
    version = stage.version()
    assert version["code"] == {"ifexp.evaluate.grading": module_digest("ifexp.evaluate.grading")}
    assert version["libraries"]["torch"].startswith("2.") and version["libraries"]["no-such-library"] is None
    assert stage.locate(tmp_path, {"a": 1}) != stage.locate(tmp_path, {"a": 2})
    assert stage.find(tmp_path, {"a": 1}) is None
    built = stage.get(tmp_path, {"a": 1}, lambda out: {"n": 1})
    assert stage.find(tmp_path, {"a": 1}) == built and built.manifest()["n"] == 1


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
