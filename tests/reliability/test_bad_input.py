"""Every bad input: one line naming the file, line, key or value; a non-zero exit; no
traceback; nothing half-written in the cache (docs/reliability.md)."""

import json
import shutil

import pytest
from helpers.cli import run_ifexp
from helpers.data import EASY_TRAINING

SMOKE = ["experiment=smoke", "logger=none"]


def fails_with_one_line(tmp_path, *args) -> str:
    result = run_ifexp(*SMOKE, f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run", *args)
    assert result.returncode != 0, result.stdout[-2000:]
    errors = [line for line in result.stderr.splitlines() if "ifexp: error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    cache = tmp_path / "cache"
    assert not list(cache.glob("*/.tmp-*")), "a half-written artifact was left in the cache"
    assert all((folder / "manifest.json").is_file() for folder in cache.glob("*/*") if folder.is_dir())
    return errors[0].split("ifexp: error: ", 1)[1]


def jsonl(tmp_path, *records) -> str:
    path = tmp_path / "cot.jsonl"
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return str(path)


GOOD = {"id": "a", "question": "What is 2+2?", "cot": "2+2=4\n#### 4", "answer": "4"}


@pytest.mark.parametrize(
    "records, message",
    [
        ((GOOD, '{"id": "b", "question": "q"\n'), ":2: not valid JSON (Expecting ',' delimiter)"),
        ((GOOD, {"id": "b", "question": "q", "answer": "1"}), ":2: missing or empty field 'cot'"),
        (({"id": "a", "question": "q", "cot": "c"},), ":1: missing or empty field 'answer'"),
        ((GOOD, GOOD), ":2: duplicate id 'a' (first on line 1)"),
        (("",), ": dataset file is empty"),
        ((GOOD, GOOD | {"id": "b"}, GOOD | {"id": "c"}), "no training examples left after the validation/test split"),
    ],
    ids=["malformed-line", "missing-cot", "missing-answer", "duplicate-id", "empty-file", "no-train-left"],
)
def test_bad_dataset_file(tmp_path, records, message):
    path = jsonl(tmp_path, *records)
    error = fails_with_one_line(
        tmp_path, "dataset=jsonl", f"dataset.path={path}", "dataset.n_val=2", "dataset.n_test=1"
    )
    assert error.endswith(message) and (error.startswith(path) or "no training" in message), error


def test_missing_dataset_file(tmp_path):
    error = fails_with_one_line(tmp_path, "dataset=jsonl", f"dataset.path={tmp_path}/nope.jsonl")
    assert error == f"{tmp_path}/nope.jsonl: dataset file not found"


@pytest.mark.parametrize(
    "override, message",
    [
        ("pruning.fraction=1.0", "pruning.fraction=1.0: must be in [0, 1)"),
        ("pruning.fraction=-0.1", "pruning.fraction=-0.1: must be in [0, 1)"),
        ("pruning=nope", "Could not find 'pruning/nope'"),
        ("estimator=nope", "Could not find 'estimator/nope'"),
        ("model=nope", "Could not find 'model/nope'"),
        ("pruning.strategy=nope", "pruning.strategy='nope': expected one of none, random"),
        ("pruning.alpha=2", "pruning.alpha=2.0: must be in [0, 1]"),
    ],
)
def test_bad_config_value(tmp_path, override, message):
    assert message in fails_with_one_line(tmp_path, override)


def test_validation_set_all_wrong_means_no_q_c(tmp_path):
    # the random tiny model answers no gsm_symbolic question correctly
    error = fails_with_one_line(tmp_path, "pruning=low_benefit")
    assert error.startswith("pruning=low_benefit: Q_C is empty (theta* answered none of the 48 queries correctly)")


def test_validation_set_all_right_means_no_q_i(tmp_path):
    # every trace is "#### 7" and every gold answer 7: fine-tuned, the tiny model always says 7
    records = [{"id": f"s{i}", "question": f"Add {i} and {7 - i}.", "cot": "#### 7", "answer": "7"} for i in range(60)]
    path = jsonl(tmp_path, *records)
    greedy = ["queries.n_samples=1", "queries.temperature=0"]
    error = fails_with_one_line(tmp_path, *EASY_TRAINING, *greedy, f"dataset.path={path}", "pruning=high_harm")
    assert error.startswith("pruning=high_harm: Q_I is empty (theta* answered all 16 queries correctly)")


def test_non_finite_training_loss(tmp_path):
    assert fails_with_one_line(tmp_path, "train.lr=1e30").startswith("non-finite training loss (nan) at step 1")


def test_tokenizer_without_chat_template(tmp_path, tiny_model):
    plain = tmp_path / "plain_model"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink()
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    error = fails_with_one_line(tmp_path, "model.source=hub", "model.tiny=null", f"model.hf_id={plain}")
    assert error == f"tokenizer at {plain} has no chat template: set one or use a chat/instruct model"


@pytest.mark.parametrize("overlong", ["truncate", "reject"])
def test_overlong_sequences_are_counted(tmp_path, easy_cot, overlong):
    long_cot = tmp_path / "long.jsonl"
    lines = easy_cot.read_text().splitlines()
    long = [json.loads(line) for line in lines]
    for record in long[::3]:  # every third trace far over the limit
        record["cot"] = "We add the numbers. " * 40 + record["cot"]
    long_cot.write_text("".join(json.dumps(r) + "\n" for r in long))
    run = tmp_path / "run"
    result = run_ifexp(
        *SMOKE,
        *EASY_TRAINING,
        f"dataset.path={long_cot}",
        # truncate: self_influence trains theta* on all of D, whose losses are said too
        "pruning=random" if overlong == "reject" else "pruning=self_influence",
        "model.max_seq_len=96",
        f"train.overlong={overlong}",
        f"paths.cache_dir={tmp_path}/cache",
        f"hydra.run.dir={run}",
        check=True,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    counted = metrics["n_truncated"] if overlong == "truncate" else metrics["n_rejected"]
    assert counted > 0, result.stderr[-2000:]
    if overlong == "reject":
        assert metrics["n_train_kept"] == 32 - 8 - metrics["n_rejected"]
    else:  # what theta* (all of D) lost: LIMO's question, said per run
        assert metrics["theta_star/n_truncated"] >= metrics["n_truncated"] > 0
        assert metrics["theta_star/max_example_len"] > 96 and metrics["theta_star/n_tokens_cut"] > 0
        assert metrics["theta_star/gradient_checkpointing"] is False  # auto: 96 tokens are short


def test_a_failed_job_does_not_stop_the_sweep(tmp_path):
    result = run_ifexp(
        "-m",
        *SMOKE,
        "pruning=low_benefit,random",  # the first fails (Q_C is empty), the second still runs
        f"paths.cache_dir={tmp_path}/cache",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("ifexp: error: pruning=low_benefit: Q_C is empty")
    assert "Traceback" not in result.stderr
    assert "ERROR pruning=low_benefit: Q_C is empty" in (tmp_path / "sweep" / "0" / "run.log").read_text()
    assert (tmp_path / "sweep" / "1" / "metrics.json").is_file()
