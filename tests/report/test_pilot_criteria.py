"""scripts/pilot_criteria.py: the plan's four criteria read from a pilot sweep's jobs."""

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def pilot(load_script):
    return load_script("pilot_criteria")


def write(root: Path, strategy: str, seed: int, delta: float, fraction: float = 0.25, **extra) -> None:
    folder = root / f"{strategy}-p{fraction}-seed{seed}"
    folder.mkdir(parents=True)
    metrics = {
        "strategy": strategy,
        "fraction": fraction,
        "replicate": f"data_seed={seed},scorer_seed={seed}",
        "n_train": 256,
        "n_train_flawed": 51,
        "flaw/lexical_ceiling": 0.6,
        "flaw/lexical_ceiling/answer_preserving": 0.9,  # a family, not a kind: not judged
        "flaw/lexical_ceiling/slip_not_carried": 0.55,
        "flaw/lexical_ceiling/cancelling_errors": extra.pop("ceiling", 0.75),
        "delta_vs_random/leg_counting": delta,
        **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_each_criterion_is_read_per_replicate_and_the_baselines_ranked_by_mean_delta(tmp_path, pilot):
    write(tmp_path, "oracle", 100, 0.05, **{"full_pass@1/leg_counting": 0.45})
    write(tmp_path, "perplexity", 100, 0.02)
    write(tmp_path, "length", 100, -0.01)
    # the same training set in every job of a replicate: one kind above 0.8 here
    write(tmp_path, "oracle", 101, -0.01, ceiling=0.81, **{"full_pass@1/leg_counting": 0.75})
    write(tmp_path, "perplexity", 101, 0.00, ceiling=0.81)
    write(tmp_path, "length", 101, 0.03, ceiling=0.81)
    replicates = pilot.read_jobs(tmp_path)
    first = pilot.criteria(replicates["data_seed=100,scorer_seed=100"], (111, 145), "leg_counting")
    assert first["flaw_rate"] == 51 / 256 and first["ok_rate"]
    assert set(first["ceilings"]) == {"slip_not_carried", "cancelling_errors"} and first["ok_ceilings"]
    assert first["full_pass"] == 0.45 and first["ok_competent"]
    assert first["headroom"] == 0.05 and first["ok_headroom"]
    second = pilot.criteria(replicates["data_seed=101,scorer_seed=101"], (20, 236), "leg_counting")
    assert not second["ok_ceilings"] and not second["ok_competent"] and not second["ok_headroom"]
    assert pilot.criteria(replicates["data_seed=101,scorer_seed=101"], None, "leg_counting")["ok_competent"] is None
    deltas = pilot.baseline_deltas(replicates, "leg_counting")
    assert deltas == {"perplexity": [0.02, 0.0], "length": [-0.01, 0.03]}


def test_only_one_fraction_is_read_and_two_jobs_of_one_strategy_are_an_error(tmp_path, pilot):
    write(tmp_path, "random", 0, 0.0)
    write(tmp_path, "random", 0, 0.0, fraction=0.1)
    write(tmp_path, "perplexity", 0, 0.04)
    write(tmp_path, "perplexity", 0, -0.02, fraction=0.1)
    at_quarter, at_tenth = (pilot.read_jobs(tmp_path, f)["data_seed=0,scorer_seed=0"] for f in (0.25, 0.1))
    assert at_quarter["perplexity"]["delta_vs_random/leg_counting"] == 0.04
    assert at_tenth["perplexity"]["delta_vs_random/leg_counting"] == -0.02
    # the same strategy, fraction and replicate twice (e.g. another prefilter in the same folder)
    (tmp_path / "perplexity-prefiltered").mkdir()
    (tmp_path / "perplexity-prefiltered" / "metrics.json").write_text(
        (tmp_path / "perplexity-p0.25-seed0" / "metrics.json").read_text()
    )
    with pytest.raises(ValueError, match="two perplexity jobs of replicate data_seed=0,scorer_seed=0"):
        pilot.read_jobs(tmp_path)


def test_query_counts_are_matched_to_their_replicate_by_the_seed_override(tmp_path, pilot):
    # the shape benchmarks/flaws.py writes: the job's queries/* metrics under "queries"
    bench = {"overrides": ["sweeps=slips", "seed=101"], "queries": {"n_correct": 111, "n_incorrect": 145}}
    (tmp_path / "f.json").write_text(json.dumps(bench))
    assert pilot.query_counts([tmp_path / "f.json"]) == {"data_seed=101,scorer_seed=101": (111, 145)}


def test_the_best_cheap_baseline_is_named_only_among_those_run_on_every_replicate(pilot):
    deltas = {"perplexity": [0.06, 0.04, 0.0], "embedding": [0.045, 0.035], "length": [-0.02, 0.01, 0.04]}
    # embedding's mean is the highest, but it has not run on the third replicate
    assert pilot.best_cheap_baseline(deltas, 3) == "perplexity"
    assert pilot.best_cheap_baseline({"embedding": [0.045, 0.035]}, 3) is None


def test_paired_disagreements_and_se_come_from_both_models_generations(tmp_path, pilot):
    write(tmp_path, "perplexity", 100, 0.25)
    job = pilot.read_jobs(tmp_path)["data_seed=100,scorer_seed=100"]["perplexity"]
    generations = tmp_path / "perplexity-p0.25-seed100" / "generations"
    generations.mkdir()
    # four problems: the strategy's model alone right on 0 and 1, Random's alone on 2, both on 3
    for arm, correct in (("pruned", [1, 1, 0, 1]), ("random", [0, 0, 1, 1])):
        lines = [json.dumps({"id": i, "correct": [c]}) for i, c in enumerate(correct)]
        (generations / f"{arm}_leg_counting.jsonl").write_text("\n".join(lines))
    better, worse, se = pilot.paired_vs_random(job, "leg_counting")
    # d = (1, 1, -1, 0): mean 0.25, population variance 0.6875, SE sqrt(0.6875 / 4)
    assert (better, worse) == (2, 1) and se == pytest.approx((0.6875 / 4) ** 0.5)
    (generations / "random_leg_counting.jsonl").unlink()
    assert pilot.paired_vs_random(job, "leg_counting") is None


def test_a_replicate_table_gives_each_strategy_its_row_and_refuses_jobs_that_disagree(tmp_path, pilot):
    shared = {"n_train_removed": 64, "random_pass@1/leg_counting": 0.55}
    theta = {"queries/n_correct": 122, "queries/n_incorrect": 134, "queries/n_incorrect_carrying/next_legs_rule": 8}
    theta["queries/n_correct_carrying/next_legs_rule"] = 1
    write(tmp_path, "oracle", 1, 0.03, **shared, **{"pass@1/leg_counting": 0.58, "flaw/auroc": 1.0, "flaw/recall": 1.0})
    write(tmp_path, "length", 1, -0.055, **shared, **{"pass@1/leg_counting": 0.495, "flaw/auroc": 0.481})
    # recall 14/51, stored as a float: 14 of 51 removed
    extra = {"pass@1/leg_counting": 0.595, "flaw/auroc": 0.824, "flaw/recall": 14 / 51, **theta}
    write(tmp_path, "combined", 1, 0.045, **shared, **extra)
    write(tmp_path, "random", 1, 0.0, **shared, **{"pass@1/leg_counting": 0.55})
    lines = pilot.replicate_table(pilot.read_jobs(tmp_path)["data_seed=1,scorer_seed=1"], "leg_counting")
    assert lines[0] == (
        "256 traces, 51 flawed; lexical ceiling 0.600; |Q_C| 122, |Q_I| 134; θ*'s wrong answers carrying "
        "next_legs_rule: 8 (right ones: 1); Random's model pass@1 0.550"
    )
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| strategy")]
    assert rows == [  # the oracle first, then by Δ; no generations or selections saved: Δ alone, n/a
        "| oracle | 0.580 | +0.030 | 1.000 | 51 of 51 | n/a |",
        "| combined | 0.595 | +0.045 | 0.824 | 14 of 51 | n/a |",
        "| length | 0.495 | -0.055 | 0.481 | n/a | n/a |",
    ]
    assert "flawed among the 64 removed" in lines[2]
    write(tmp_path, "perplexity", 1, 0.0, **{**shared, "random_pass@1/leg_counting": 0.56})
    with pytest.raises(ValueError, match=r"random_pass@1/leg_counting differs between the jobs of one replicate"):
        pilot.replicate_table(pilot.read_jobs(tmp_path)["data_seed=1,scorer_seed=1"], "leg_counting")


def test_criteria_refuse_jobs_of_one_replicate_that_disagree_on_what_they_share(tmp_path, pilot):
    # a job from another training set in the replicate's folder: its ceiling is not the replicate's
    write(tmp_path, "oracle", 100, 0.05, **{"full_pass@1/leg_counting": 0.45})
    write(tmp_path, "perplexity", 100, 0.02, ceiling=0.85)
    with pytest.raises(ValueError, match=r"flaw/lexical_ceiling/cancelling_errors differs"):
        pilot.criteria(pilot.read_jobs(tmp_path)["data_seed=100,scorer_seed=100"], (111, 145), "leg_counting")


def test_a_replicate_table_counts_the_removals_each_selection_shares_with_randoms(tmp_path, pilot):
    from ifexp import outputs

    ids = [f"t{i}" for i in range(8)]
    for strategy, removed in {
        "random": {"t0", "t1", "t2"},
        "difficulty": {"t0", "t1", "t7"},
        "oracle": {"t5", "t6", "t7"},
    }.items():
        write(
            tmp_path,
            strategy,
            1,
            0.0,
            **{"n_train_removed": 3, "pass@1/leg_counting": 0.5, "random_pass@1/leg_counting": 0.5},
        )
        folder = tmp_path / f"{strategy}-p0.25-seed1"
        outputs.write_selection(folder, strategy, 0.25, 1, {}, ids, [i not in removed for i in ids])
    lines = pilot.replicate_table(pilot.read_jobs(tmp_path)["data_seed=1,scorer_seed=1"], "leg_counting")
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[-1] for line in lines if line.startswith("| ")}
    assert rows["oracle"] == "0 of 3 |" and rows["difficulty"] == "2 of 3 |"
