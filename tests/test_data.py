import json
import random

import pytest

from ifexp.data import (
    ANSWER_MARK,
    FLAW_KINDS,
    Example,
    build_splits,
    corrupt,
    gsm_symbolic_examples,
    inject_flaws,
    read_jsonl,
    with_final_answer,
    write_jsonl,
)
from ifexp.schema import DatasetConfig, IfexpError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def good(i, **extra):
    return json.dumps({"id": f"e{i}", "question": "1+1?", "cot": "1+1=2\n#### 2", "answer": "2", **extra})


def test_jsonl_round_trip(tmp_path):
    examples = [Example("a", "q", "c\n#### 1", "1"), Example("b", "q2", "c2\n#### 2", "2", "truncated")]
    write_jsonl(tmp_path / "d.jsonl", examples)
    assert read_jsonl(tmp_path / "d.jsonl") == examples


@pytest.mark.parametrize(
    "lines, message",
    [
        ([good(1), "{not json"], "d.jsonl:2: not valid JSON"),
        ([good(1), json.dumps({"id": "x", "question": "q", "answer": "1"})], "d.jsonl:2: missing or empty field 'cot'"),
        ([json.dumps({"id": "x", "question": "q", "cot": "c"})], "d.jsonl:1: missing or empty field 'answer'"),
        ([good(1), good(2), good(1)], "d.jsonl:3: duplicate id 'e1' (first on line 1)"),
        (["[1, 2]"], "d.jsonl:1: expected a JSON object"),
        ([""], "d.jsonl: dataset file is empty"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, lines, message):
    path = write_lines(tmp_path / "d.jsonl", lines)
    with pytest.raises(IfexpError) as error:
        read_jsonl(path)
    assert message in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(IfexpError, match="dataset file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_with_final_answer_replaces_existing_mark():
    assert with_final_answer("a\nb\n#### 3", "4") == "a\nb\n#### 4"
    assert with_final_answer("so it is 5.", "5").endswith(f"\n{ANSWER_MARK} 5")


def test_gsm_symbolic_is_deterministic_and_distinct():
    first, second = gsm_symbolic_examples(30, seed=3), gsm_symbolic_examples(30, seed=3)
    assert first == second
    assert len({e.question for e in first}) == 30
    assert all(e.cot.endswith(f"{ANSWER_MARK} {e.answer}") for e in first)


def test_splits_are_disjoint_and_flaws_only_in_train():
    splits = build_splits(DatasetConfig(n_train=40, n_val=10, n_test=10, flaw_fraction=0.25))
    questions = [{e.question for e in splits[s]} for s in ("train", "val", "test")]
    assert not (questions[0] & questions[1]) and not (questions[0] & questions[2]) and not (questions[1] & questions[2])
    assert sum(bool(e.flaw) for e in splits["train"]) == 10
    assert not any(e.flaw for e in splits["val"] + splits["test"])


@pytest.mark.parametrize("kind", FLAW_KINDS)
def test_each_flaw_kind_changes_the_trace_but_not_the_gold_answer(kind):
    examples = gsm_symbolic_examples(20, seed=5)
    rng = random.Random(0)
    for example, donor in zip(examples, examples[1:] + examples[:1], strict=True):
        flawed = corrupt(example, kind, rng, donor)
        assert flawed.cot != example.cot
        assert flawed.answer == example.answer and flawed.question == example.question
        assert flawed.flaw in FLAW_KINDS


def test_wrong_answer_flaws_end_with_a_wrong_answer():
    examples = gsm_symbolic_examples(20, seed=5)
    rng = random.Random(1)
    for example in examples:
        for kind in ("arithmetic_error", "wrong_final_answer"):
            flawed = corrupt(example, kind, rng)
            if flawed.flaw in ("arithmetic_error", "wrong_final_answer"):
                assert flawed.cot.rsplit(ANSWER_MARK, 1)[1].strip() != example.answer


def test_inject_flaws_fraction_and_kinds():
    examples = gsm_symbolic_examples(50, seed=7)
    flawed = inject_flaws(examples, 0.2, seed=0)
    labelled = [e for e in flawed if e.flaw]
    assert len(labelled) == 10
    assert {e.flaw for e in labelled} >= {"arithmetic_error", "wrong_final_answer", "truncated"}
    with pytest.raises(IfexpError, match="flaw_fraction"):
        inject_flaws(examples, 1.0, seed=0)
