"""scripts/animal_counts.py: a leg_counting job's removals and pass@1 split by the number of animals."""

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from ifexp import outputs
from ifexp.tasks import leg_counting_split_problems, leg_counting_splits


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("animal_counts")


def test_removals_and_pass_at_1_are_split_by_how_many_animals_a_problem_lists(tmp_path, script, capsys, monkeypatch):
    job = tmp_path / "length-p0.25-seed7"
    dataset = {"source": "leg_counting", "n_train": 12, "n_val": 2, "n_test": 6, "data_seed": "${seed}"}
    dataset |= {"flaw_fraction": 0.0, "flaw_kinds": []}
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 7, "dataset": dataset}), outputs.saved_config_path(job))
    settings = OmegaConf.create({"seed": 7, "dataset": dataset}).dataset
    train, _, test = leg_counting_splits(settings)
    problems = leg_counting_split_problems(settings)  # the generator's own animals, not the question re-parsed
    sizes = [len(problem.animals) for problem in problems[: settings.n_train]]
    test_sizes = [len(problem.animals) for problem in problems[settings.n_train + settings.n_val :]]
    removed = [e.id for e, size in zip(train, sizes, strict=True) if size == max(sizes)][:2] + [train[0].id]
    outputs.write_selection(job, "length", 0.25, 7, {}, [e.id for e in train], [e.id not in removed for e in train])
    (job / "generations").mkdir()
    for arm, right in {"pruned": {0, 1}, "random": {0, 2, 3}}.items():
        rows = [{"question": e.question, "correct": [i in right, True]} for i, e in enumerate(test)]  # the first counts
        (job / "generations" / f"{arm}_leg_counting.jsonl").write_text("\n".join(map(json.dumps, rows)))

    traces, removed_by_count = script.training_counts(job)
    assert traces == Counter(sizes)
    assert removed_by_count == Counter(sizes[[e.id for e in train].index(i)] for i in set(removed))
    pruned = script.pass_by_count(job / "generations" / "pruned_leg_counting.jsonl")
    assert pruned == {s: (sum(test_sizes[i] == s for i in {0, 1}), test_sizes.count(s)) for s in set(test_sizes)}

    monkeypatch.setattr("sys.argv", ["animal_counts.py", str(job)])
    script.main()
    printed = capsys.readouterr().out
    assert sum(f"| {tmp_path.name}/{job.name} | " in line for line in printed.splitlines()) == len(
        set(sizes) | set(test_sizes)
    )

    outputs.write_selection(job, "length", 0.25, 7, {}, ["legs-elsewhere"], [False])
    with pytest.raises(ValueError, match="removes \\['legs-elsewhere'\\], not in the regenerated training set"):
        script.training_counts(job)


def test_a_question_that_lists_no_animals_is_named(script):
    assert script.animal_count("how many legs are there in total if you have 3 spiders, 1 cow?") == 2
    with pytest.raises(ValueError, match="not a leg_counting question"):
        script.animal_count("What is 2 + 2?")
