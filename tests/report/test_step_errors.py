"""scripts/step_errors.py: a right answer with a wrong step is counted as an imitated flaw."""

import json
import random

import pytest
from omegaconf import OmegaConf

from ifexp.tasks import clean_trace, flawed_trace, generator_seed, leg_counting_problems


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("step_errors")


def test_right_answers_with_a_slip_are_counted_and_wrong_answers_are_not(tmp_path, script, capsys, monkeypatch):
    dataset = {"source": "leg_counting", "n_train": 4, "n_val": 2, "n_test": 4, "data_seed": "${seed}"}
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"seed": 7, "dataset": dataset}), tmp_path / ".hydra" / "config.yaml")
    problems = leg_counting_problems(10, seed=generator_seed(7))[6:]  # data seed 7's test split
    slipped = flawed_trace(problems[1], "slip_not_carried", random.Random(0))
    wrong = clean_trace(problems[2]).rsplit("####", 1)[0] + f"#### {problems[2].total + 1}"
    answers = [(clean_trace(problems[0]), True), (slipped, True), (wrong, False), (clean_trace(problems[3]), True)]
    rows = [{"id": p.id, "responses": [text], "correct": [ok]} for p, (text, ok) in zip(problems, answers, strict=True)]
    (tmp_path / "generations").mkdir()
    (tmp_path / "generations" / "pruned_leg_counting.jsonl").write_text("\n".join(map(json.dumps, rows)))

    counts = script.step_errors(script.job_problems(tmp_path), rows)
    assert counts["pass@1"] == 0.75
    assert counts["right_with_wrong_step"] == 1  # the slip; the wrong answer is pass@1's, not a step's
    assert counts["kinds"] == {"arithmetic": 1, "total_terms": 1}  # the slipped product, the total that skips it

    monkeypatch.setattr("sys.argv", ["step_errors.py", str(tmp_path)])
    script.main()
    assert f"| {tmp_path.name} | pruned | 0.750 | 1 | " in capsys.readouterr().out


def test_answers_that_carry_the_jobs_rule_are_counted_by_name(tmp_path, script):
    from ifexp.tasks import next_legs_rule_holds

    (tmp_path / ".hydra").mkdir()
    dataset = {"source": "leg_counting", "flaw_kinds": ["next_legs_rule"], "flaw_fraction": 0.2}
    OmegaConf.save(OmegaConf.create({"dataset": dataset}), tmp_path / ".hydra" / "config.yaml")
    assert script.job_rules(tmp_path) == ["next_legs_rule"]
    OmegaConf.save(
        OmegaConf.create({"dataset": {**dataset, "flaw_fraction": 0.0}}), tmp_path / ".hydra" / "config.yaml"
    )
    assert script.job_rules(tmp_path) == []

    holds = [p for p in leg_counting_problems(300, seed=1) if next_legs_rule_holds(p)][:2]
    rule = flawed_trace(holds[0], "next_legs_rule", random.Random(0))
    rows = [
        {"id": holds[0].id, "responses": [rule], "correct": [True]},
        {"id": holds[1].id, "responses": [clean_trace(holds[1])], "correct": [True]},
    ]
    counts = script.step_errors({p.id: p for p in holds}, rows, ["next_legs_rule"])
    assert counts["kinds"]["carries next_legs_rule"] == 1  # the rule trace, not the clean one
    assert counts["right_with_wrong_step"] == 1
