"""Your own data, end to end (issue 18): a JSONL file's held-out test split is evaluated as the
in-domain benchmark named after the dataset, beside the configured ones, and a cross-model
transfer job (one model scores, another trains) runs on the tiny models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers.data import EASY_TRAINING, read_records
from helpers.jobs import run


def manifest_key(artifact: str) -> dict:
    return json.loads((Path(artifact) / "manifest.json").read_text())["key"]


def write_arithmetic(path: Path, n: int = 120, n_repeats: int = 10) -> Path:
    """n arithmetic word problems with their traces; the last n_repeats ask an earlier question
    again (another id, another trace), as a CoT set with several traces per question does."""
    rng = random.Random(7)
    pairs = rng.sample([(a, b) for a in range(2, 40) for b in range(2, 40)], n - n_repeats)
    pairs += rng.sample(pairs, n_repeats)
    with path.open("w") as handle:
        for i, (a, b) in enumerate(pairs):
            question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
            cot = f"He starts with {a} apples.\n{a} + {b} = {a + b}\n#### {a + b}"
            record = {"id": f"arith-{i}", "question": question, "cot": cot, "answer": str(a + b)}
            handle.write(json.dumps(record) + "\n")
    return path


def test_a_jsonl_files_held_out_split_is_the_in_domain_benchmark(tmp_path):
    """120 examples, dataset.n_test=40: pass@1/arith and delta_vs_random/arith are computed on
    the 40 held-out problems, none of whose questions is in train or validation."""
    from ifexp.report import write_report

    data = write_arithmetic(tmp_path / "arith.jsonl")
    overrides = [
        "model=tiny_llama",
        "engine=hf",
        "logger=none",
        "dataset=jsonl",
        f"dataset.path={data}",
        "dataset.name=arith",
        "dataset.n_val=16",
        "dataset.n_test=40",
        "pruning=perplexity",
        "pruning.fraction=0.25",
        "train.epochs=1",
        "eval.benchmarks=[basic_arithmetic]",
        "eval.max_examples=4",
        "eval.max_new_tokens=12",
        "eval.eval_base=false",
        "eval.eval_full=false",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    metrics = run(overrides, tmp_path / "run")

    # the in-domain benchmark, beside the configured one, and its delta vs Random
    for key in ("pass@1/arith", "random_pass@1/arith", "delta_vs_random/arith", "pass@1/basic_arithmetic"):
        assert key in metrics, key
    assert metrics["delta_vs_random/arith"] == pytest.approx(metrics["pass@1/arith"] - metrics["random_pass@1/arith"])
    assert metrics["n_problems/arith"] == metrics["data/n_test"] == 40

    # computed on exactly the 40 held-out problems, none of them a training or validation question
    splits = {s: read_records(Path(metrics["artifact/dataset"]) / f"{s}.jsonl") for s in ("train", "val", "test")}
    held_out = {r["id"]: r["question"] for r in splits["test"]}
    assert len(held_out) == len(set(held_out.values())) == 40
    seen = {r["question"] for r in splits["train"] + splits["val"]}
    assert not seen & set(held_out.values())
    for model in ("pruned", "random"):
        generations = read_records(tmp_path / "run" / "generations" / f"{model}_arith.jsonl")
        assert {g["id"]: g["question"] for g in generations} == held_out
        prefix = "" if model == "pruned" else "random_"
        pass_at_1 = sum(sum(g["correct"]) / len(g["correct"]) for g in generations) / len(generations)
        assert metrics[f"{prefix}pass@1/arith"] == pytest.approx(pass_at_1)

    # the file's repeated questions: the traces of a held-out question are not trained on (counted)
    n_file = len(read_records(data))
    assert metrics["n_train"] == len(splits["train"])
    assert metrics["data/n_duplicate_questions"] == n_file - 16 - 40 - metrics["n_train"]
    assert "data/n_val_in_train" in metrics

    # ifexp-report treats it like any other benchmark: a column, paired over its 40 problems
    report = write_report(tmp_path / "run").read_text()
    assert "arith" in report and "basic_arithmetic" in report
    assert "40 problems" in report, report


def test_cross_model_transfer_scores_with_one_model_and_trains_another(easy_cot, tmp_path):
    """+model@scorer=tiny_llama_scorer: theta*, its answers and the gradient features are the
    scorer's (their keys name its base model), the pruned and Random models the trainee's; the
    two models have different tokenizers, so only text passes from one to the other."""
    from ifexp.models import load_tokenizer

    overrides = [
        "experiment=smoke",
        *EASY_TRAINING,
        f"dataset.path={easy_cot}",
        "dataset.n_val=8",
        "+model@scorer=tiny_llama_scorer",
        "pruning=high_harm",
        "eval.benchmarks=[gsm_symbolic]",
        "eval.max_examples=4",
        "eval.max_new_tokens=12",
        "queries.max_new_tokens=12",
        "queries.n_samples=2",
        "eval.eval_base=false",
        "eval.eval_full=false",
        "logger=none",
        f"paths.cache_dir={tmp_path}/cache",
    ]
    metrics = run(overrides, tmp_path / "run")
    assert metrics["model"] == "tiny_llama" and metrics["scorer"] == "tiny_llama_scorer"
    trainee, scorer = metrics["artifact/base_model"], metrics["artifact/scorer_base_model"]
    assert trainee != scorer
    trainee_digest, scorer_digest = Path(trainee).name, Path(scorer).name
    # different tokenizers: the scorer's queries and the training examples cross as text
    assert len(load_tokenizer(trainee)) != len(load_tokenizer(scorer))

    # the scorer's side
    theta_star = manifest_key(metrics["artifact/sft_full"])
    assert theta_star["base"] == scorer_digest and theta_star["model"]["tiny"]["vocab_size"] == 768
    sft_full_digest = Path(metrics["artifact/sft_full"]).name
    assert manifest_key(metrics["artifact/queries"])["model"] == {"base": scorer_digest, "sft": sft_full_digest}
    for store in ("features_train", "features_queries"):
        assert manifest_key(metrics[f"artifact/{store}"])["checkpoint"] == {
            "base": scorer_digest,
            "sft": sft_full_digest,
        }
    # the trainee's side
    for name in ("pruned", "random"):
        key = manifest_key(metrics[f"artifact/sft_{name}"])
        assert key["base"] == trainee_digest and key["model"]["tiny"]["vocab_size"] == 1024
        for bench in ("gsm_symbolic", "jsonl"):  # smoke holds out 8 problems of the file: the in-domain benchmark
            assert manifest_key(metrics[f"artifact/eval/{name}/{bench}"])["model"] == {
                "base": trainee_digest,
                "sft": Path(metrics[f"artifact/sft_{name}"]).name,
            }
    assert metrics["queries/n_incorrect"] > 0
    assert metrics["delta_vs_random/gsm_symbolic"] == pytest.approx(
        metrics["pass@1/gsm_symbolic"] - metrics["random_pass@1/gsm_symbolic"]
    )
    rows = (tmp_path / "run" / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + metrics["n_train"] == 1 + 32
