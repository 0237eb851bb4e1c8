import json
import random
from dataclasses import replace

import pytest

import ifexp.data
from ifexp.data import FLAW_KINDS, _with_final_answer, build_splits, corrupt, gsm_symbolic_examples, inject_flaws
from ifexp.evaluate.grading import check_trace_answers
from ifexp.examples import ANSWER_MARK, Example, answer_line, read_jsonl, write_jsonl
from ifexp.schema import DatasetConfig, IfexpError, JobConfig
from ifexp.validation import validate


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


# ---------------------------------------------------------------------------------------------
# The in-domain test split of a jsonl or hub set (issue 18)


def arithmetic_records(n: int, repeats: dict[int, int] | None = None) -> list[dict]:
    """n records with distinct questions; repeats {i: j} makes record i ask record j's question again
    (with other spacing and case: still the same question)."""
    records = [
        {
            "id": f"r{i}",
            "question": f"What is {i} plus {i + 1}?",
            "cot": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}",
        }
        | {"answer": str(2 * i + 1)}
        for i in range(n)
    ]
    for i, j in (repeats or {}).items():
        records[i]["question"] = "  " + records[j]["question"].upper().replace(" ", "   ")
    return records


def keys(examples):
    from ifexp.examples import question_key

    return {question_key(e.question) for e in examples}


def test_auto_n_test_holds_out_a_fifth_of_a_large_file_and_nothing_of_a_small_one():
    from ifexp.data import auto_n_test

    assert [auto_n_test(n) for n in (0, 120, 199, 200, 256, 817, 1500, 10_000)] == [0, 0, 0, 40, 51, 163, 300, 300]


@pytest.mark.parametrize("source", ["jsonl", "hub"])
def test_a_drawn_test_split_shares_no_question_with_train_or_validation(tmp_path, monkeypatch, source):
    from ifexp.data import split_dataset

    # 30 questions are asked twice, 10 three times: several traces per question, as CoT sets have
    repeats = {100 + k: k for k in range(30)} | {130 + k: k for k in range(10)}
    records = arithmetic_records(140, repeats)
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in records])
    examples = read_jsonl(path)
    monkeypatch.setattr(ifexp.data, "hub_examples", lambda cfg: examples)
    cfg = DatasetConfig(name="mine", source=source, path=str(path), n_train=-1, n_val=20, n_test=40, flaw_fraction=0)
    splits, report = split_dataset(cfg)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert len(test) == len(keys(test)) == 40
    assert not keys(test) & (keys(train) | keys(val))
    # every example is somewhere, or counted as a left-out duplicate of a held-out question
    assert len(train) + len(val) + len(test) + report["n_duplicate_questions"] == 140
    assert report["n_duplicate_questions"] > 0 and report["n_test"] == 40 and not report["n_test_auto"]
    # validation questions that also have a training trace are counted, not removed
    assert report["n_val_in_train"] == sum(bool(keys([e]) & keys(train)) for e in val) > 0
    assert build_splits(cfg) == splits  # deterministic


def test_a_test_file_loses_the_problems_it_shares_with_train_or_validation(tmp_path):
    from ifexp.data import split_dataset

    records = arithmetic_records(40)
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in records])
    cfg = DatasetConfig(name="mine", source="jsonl", path=str(path), n_train=-1, n_val=8, n_test=-1, flaw_fraction=0)
    val_questions = {e.question for e in split_dataset(cfg)[0]["val"]}
    train_question = next(r["question"] for r in records if r["question"] not in val_questions)
    val_question = next(iter(val_questions))
    fresh = arithmetic_records(50)[40:]  # ten questions that are not in the file
    test_records = [
        {**fresh[0], "id": "t0"},
        {**fresh[1], "id": "t1", "question": train_question.upper()},  # a training question
        {**fresh[2], "id": "t2", "question": f" {val_question} "},  # a validation question
        {**fresh[3], "id": "t3"},
        {**fresh[3], "id": "t4"},  # t3 again
        *({**r, "id": f"t{5 + i}"} for i, r in enumerate(fresh[4:])),
    ]
    test_path = write_lines(tmp_path / "test.jsonl", [json.dumps(r) for r in test_records])
    splits, report = split_dataset(replace(cfg, test_path=str(test_path)))
    assert [e.id for e in splits["test"]] == ["t0", "t3", "t5", "t6", "t7", "t8", "t9", "t10"]
    assert report["n_duplicate_questions"] == 3 and report["n_test"] == 8
    assert len(splits["train"]) == 32  # nothing drawn from the training file for the test split
    assert not keys(splits["test"]) & (keys(splits["train"]) | keys(splits["val"]))


def test_auto_holds_out_nothing_of_a_small_file_and_says_so(tmp_path, caplog):
    from ifexp.data import split_dataset, split_metrics

    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in arithmetic_records(120)])
    cfg = DatasetConfig(name="mine", source="jsonl", path=str(path), n_train=-1, n_val=16, n_test=-1, flaw_fraction=0)
    splits, report = split_dataset(cfg)
    assert splits["test"] == [] and len(splits["train"]) == 104
    with caplog.at_level("WARNING"):
        metrics = split_metrics(cfg, report)
    assert metrics == {"data/n_val": 16, "data/n_test": 0, "data/n_duplicate_questions": 0, "data/n_val_in_train": 0}
    assert "120 distinct questions (fewer than 200): no in-domain test split" in caplog.text

    big = write_lines(tmp_path / "big.jsonl", [json.dumps(r) for r in arithmetic_records(256)])
    splits, report = split_dataset(replace(cfg, path=str(big)))
    assert len(splits["test"]) == 51 and report["n_test_auto"] and len(splits["train"]) == 256 - 16 - 51


def test_too_large_a_test_split_leaves_no_training_example(tmp_path):
    records = arithmetic_records(6, {k: 0 for k in range(1, 6)})  # one question, six traces
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in records])
    cfg = DatasetConfig(name="mine", source="jsonl", path=str(path), n_train=-1, n_val=2, n_test=1, flaw_fraction=0)
    with pytest.raises(IfexpError, match="no training examples left after the validation/test split"):
        build_splits(cfg)


@pytest.mark.parametrize(
    "dataset, benchmarks, message",
    [
        ({"n_test": -2}, None, "dataset.n_test=-2: must be >= 0, or -1 (auto)"),
        ({"source": "gsm_symbolic", "n_test": -1}, None, "dataset.n_test=-1 (auto) is for jsonl and hub sets"),
        (
            {"source": "gsm_symbolic", "n_test": 9, "test_path": "t.jsonl"},
            None,
            "dataset.test_path is for jsonl and hub sets",
        ),
        ({"n_test": 5, "test_path": "t.jsonl"}, None, "dataset.n_test=5 and dataset.test_path: give one"),
        ({"name": "asdiv"}, ["asdiv"], "dataset.name='asdiv' is the name of a benchmark"),
        ({"name": "asdiv"}, None, "dataset.name='asdiv' is the name of a benchmark"),
        (
            {"source": "gsm_symbolic", "n_test": 9},
            ["gsm_symbolic"],
            "eval.benchmarks lists 'gsm_symbolic', the task dataset.source=gsm_symbolic generates",
        ),
        ({"name": "my/data"}, None, "dataset.name='my/data': names the in-domain benchmark"),
    ],
)
def test_test_split_settings_fail_validation_in_one_line(dataset, benchmarks, message):
    from ifexp.schema import EvalConfig

    settings = {"name": "mine", "source": "jsonl", "path": "d.jsonl", "n_test": -1} | dataset
    eval_cfg = EvalConfig(benchmarks=benchmarks) if benchmarks else EvalConfig()
    with pytest.raises(IfexpError) as error:
        validate(JobConfig(dataset=DatasetConfig(**settings), eval=eval_cfg))
    assert str(error.value).startswith(message)
    # no test split, no benchmark named after the dataset: the name is free
    validate(JobConfig(dataset=DatasetConfig(**(settings | {"n_test": 0, "test_path": None})), eval=eval_cfg))


@pytest.mark.parametrize("source", ["jsonl", "gsm_symbolic", "leg_counting"])
def test_the_in_domain_benchmark_is_the_whole_test_split_and_named_after_the_dataset(source):
    from ifexp.pipeline import load_benchmarks

    test = [Example(f"t{i}", f"q{i}", "c", str(i)) for i in range(70)]
    path = "d.jsonl" if source == "jsonl" else None
    cfg = JobConfig(dataset=DatasetConfig(name="mine", source=source, path=path, n_test=70))
    cfg.eval.benchmarks, cfg.eval.max_examples = ["basic_arithmetic"], 5
    validate(cfg)
    benchmarks = load_benchmarks(cfg, test)
    assert list(benchmarks) == ["mine", "basic_arithmetic"]
    assert [p.id for p in benchmarks["mine"]] == [e.id for e in test]  # dataset.n_test sizes it, not max_examples
    assert len(benchmarks["basic_arithmetic"]) == 5
    assert list(load_benchmarks(cfg, [])) == ["basic_arithmetic"]


def test_gsm_symbolic_is_in_domain_like_every_dataset_and_a_job_with_nothing_to_evaluate_stops():
    from ifexp.pipeline import load_benchmarks

    test = [Example(f"t{i}", f"q{i}", "c", str(i)) for i in range(3)]
    cfg = JobConfig(dataset=DatasetConfig(name="gsm_symbolic", source="gsm_symbolic", n_test=3))
    cfg.eval.benchmarks = []  # eval=in_domain, the default
    validate(cfg)
    assert {name: [p.id for p in problems] for name, problems in load_benchmarks(cfg, test).items()} == {
        "gsm_symbolic": ["t0", "t1", "t2"]
    }
    cfg.eval.benchmarks = ["gsm_symbolic"]  # eval=math_offline lists it: the same held-out split, once
    assert [p.id for p in load_benchmarks(cfg, test)["gsm_symbolic"]] == ["t0", "t1", "t2"]
    cfg.eval.benchmarks = []
    with pytest.raises(IfexpError, match="nothing to evaluate: dataset 'gsm_symbolic' holds out no test problems"):
        load_benchmarks(cfg, [])
