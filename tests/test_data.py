import json
import random

import pytest

import ifexp.data
from ifexp.data import (
    ANSWER_MARK,
    FLAW_KINDS,
    Example,
    _with_final_answer,
    answer_line,
    build_splits,
    corrupt,
    gsm_symbolic_examples,
    inject_flaws,
    read_jsonl,
    write_jsonl,
)
from ifexp.evaluate.grading import check_trace_answers
from ifexp.schema import DatasetConfig, IfexpError, JobConfig, validate


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


# A user's traces as the file has them: a wrong final answer, a Markdown heading, a cut-off
# trace, trailing whitespace. None of them may be rewritten.
USER_TRACES = {
    "wrong": ("Two twenties and one more: 20 + 20 + 1 = 41\n#### 41", "42"),
    "heading": ("#### Step 1\n6 * 7 = 42\n#### 42", "42"),
    "heading_only": ("#### Step 1\n6 * 7 = 42", "42"),
    "truncated": ("We start with 20 apples.\nThen we", "42"),
    "spaces": ("  6 * 7 = 42  \n#### 42\n\n", "42"),
}


def user_records(n_filler: int = 6) -> list[dict]:
    records = [{"id": i, "question": f"Question {i}?", "cot": c, "answer": a} for i, (c, a) in USER_TRACES.items()]
    records += [json.loads(good(i)) for i in range(n_filler)]
    return records


@pytest.mark.parametrize("source", ["jsonl", "hub"])
def test_user_traces_are_trained_on_exactly_as_written(tmp_path, monkeypatch, source):
    records = user_records()
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in records])
    assert read_jsonl(path)[0].cot == USER_TRACES["wrong"][0]
    hub = [Example(str(r["id"]), r["question"], r["cot"], r["answer"]) for r in records]
    monkeypatch.setattr(ifexp.data, "hub_examples", lambda cfg: hub)
    cfg = DatasetConfig(name="mine", source=source, path=str(path), n_train=-1, n_val=3, n_test=2, flaw_fraction=0.0)
    splits = build_splits(cfg)
    split_cots = {e.id: e.cot for split in splits.values() for e in split}
    assert split_cots == {str(r["id"]): r["cot"] for r in records}  # byte for byte, every split

    examples = [e for split in splits.values() for e in split]
    check = check_trace_answers(examples, "hash")
    verdict = {
        e.id: (bool(ok), bool(has)) for e, ok, has in zip(examples, check.correct, check.has_answer, strict=True)
    }
    assert verdict["wrong"] == (False, True)  # read as written: 41, not the gold 42
    assert verdict["heading"] == (True, True)  # `#### Step 1` kept, the last `####` line is the answer
    assert verdict["heading_only"] == (False, False)  # a heading is no answer line
    assert verdict["truncated"] == (False, False)  # no answer, and none is added
    assert verdict["spaces"] == (True, True)
    assert check.n_wrong == 1 and check.n_no_answer == 2


def test_flaws_keep_a_traces_markdown_headings():
    example = Example("h", "q", "#### Step 1\n6 * 7 = 42\n#### Step 2\n42 + 0 = 42\n#### 42", "42")
    flawed = corrupt(example, "wrong_final_answer", random.Random(0))
    lines = flawed.cot.splitlines()
    assert lines[:4] == example.cot.splitlines()[:4] and lines[-1].startswith(ANSWER_MARK)
    assert lines[-1] != "#### 42" and len(lines) == 5


def test_answer_line_is_the_last_mark_line_that_is_no_heading():
    assert answer_line("#### Step 1\n6 * 7 = 42\n#### 42".splitlines()) == 2
    assert answer_line("#### Step 1\n6 * 7 = 42".splitlines()) is None
    assert answer_line("6 * 7 = 42\n#### 42\n\nI hope this helps!".splitlines()) == 1  # a number is no heading
    assert answer_line("Is 42 even?\n#### yes\n".splitlines()) == 1  # last line: a word answer
    assert answer_line("#### **Solution**\n6 * 7 = 42".splitlines()) is None
    assert answer_line("no mark".splitlines()) is None


def test_generator_writes_the_gold_answer_on_its_own_final_line():
    # reasoning-gym's answer_cot sometimes ends "#### 8.0" for the answer 8
    assert _with_final_answer("a\nb\n#### 8.0", "8") == "a\nb\n#### 8"
    assert _with_final_answer("so it is 5.", "5").endswith(f"\n{ANSWER_MARK} 5")


def test_bad_answer_format_fails_validation_in_one_line():
    with pytest.raises(IfexpError) as error:
        validate(JobConfig(dataset=DatasetConfig(answer_format="latex")))
    assert str(error.value) == "dataset.answer_format='latex': expected one of auto, hash, boxed, last_number"
    validate(JobConfig(dataset=DatasetConfig(answer_format="boxed")))


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
