"""ifexp-report: rows by every differing config value, paired statistics over problems × seeds."""

import itertools
import json
import re
from fractions import Fraction

import numpy as np
import pytest
import yaml
from helpers.config import with_values

from ifexp.report import main, write_report
from ifexp.report.render import delta_text, per_seed_text
from ifexp.report.stats import Estimate, sign_flip_p_value
from ifexp.schema import IfexpError

BENCH = "gsm"


def job_config(**overrides):
    """A resolved job config as Hydra writes it to .hydra/config.yaml (the parts the report reads),
    with `overrides` ({dotted key: value}) set."""
    config = {
        "model": {"name": "m", "max_seq_len": 512, "lora_targets": ["q_proj", "v_proj"]},
        "dataset": {"name": "d", "n_train": 128, "flaw_fraction": 0.25},
        "train": {"epochs": 1.0, "lr": 0.002},
        "eval": {"benchmarks": [BENCH], "max_examples": 40},
        "estimator": {"name": "proj_fisher", "damping": 1.0, "loss_weighting": "token_mean"},
        "pruning": {"strategy": "combined", "fraction": 0.25, "alpha": 0.5},
        "logger": {"name": "none", "mode": "offline"},
        "paths": {"cache_dir": "outputs/cache"},
        "compute": {"num_processes": 1},
        "scorer": None,
        "seed": 0,
    }
    return with_values(config, overrides)


def write_job(job, config, pruned=None, random=None, metrics=None):
    """A job folder: .hydra/config.yaml, metrics.json and (when given) the paired generations.

    pruned / random: {problem id: [correct per sample]} of the strategy's model and Random's.
    """
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    seed, strategy = config["seed"], config["pruning"]["strategy"]
    base = {
        "model": "m",
        "dataset": "d",
        "estimator": config["estimator"]["name"],
        "strategy": strategy,
        "fraction": config["pruning"]["fraction"],
        "seed": seed,
    }
    if pruned is not None:
        (job / "generations").mkdir()
        for arm, outcomes in (("pruned", pruned), ("random", random)):
            lines = [json.dumps({"id": pid, "answer": "1", "correct": c}) for pid, c in outcomes.items()]
            (job / "generations" / f"{arm}_{BENCH}.jsonl").write_text("\n".join(lines) + "\n")
        ours = np.mean([np.mean(c) for c in pruned.values()])
        theirs = np.mean([np.mean(c) for c in random.values()])
        base.update(
            {f"pass@1/{BENCH}": ours, f"random_pass@1/{BENCH}": theirs, f"delta_vs_random/{BENCH}": ours - theirs}
        )
    base.update(metrics or {})
    (job / "metrics.json").write_text(json.dumps(base))


# The known set of problems (30 problems × 3 seeds, greedy): the strategy's model solves p0-p3 in
# every seed and p4, p5 in seeds 0 and 1, where Random's does not; Random's solves p6 in seed 0
# where the strategy's does not; both solve p7-p9 everywhere, and nothing else.
N_PROBLEMS = 30


def known_outcomes(seed):
    def strategy_solves(i):
        return i in (0, 1, 2, 3, 7, 8, 9) or (i in (4, 5) and seed < 2) or (i == 6 and seed > 0)

    pruned = {f"p{i}": [strategy_solves(i)] for i in range(N_PROBLEMS)}
    random = {f"p{i}": [i in (6, 7, 8, 9)] for i in range(N_PROBLEMS)}
    return pruned, random


def exact_bootstrap_quantiles(values, denominator):
    """2.5% / 97.5% quantiles of the exact bootstrap distribution of the mean of `values`
    (problems resampled with replacement), from the distribution of the sum of len(values) draws."""
    ints = [int(v * denominator) for v in values]
    n, low, high = len(ints), min(ints) * len(ints), max(ints) * len(ints)
    dist = {0: 1.0}
    for _ in range(n):
        step: dict[int, float] = {}
        for total, p in dist.items():
            for v in ints:
                step[total + v] = step.get(total + v, 0.0) + p / n
        dist = step
    sums = np.arange(low, high + 1)
    cdf = np.cumsum([dist.get(int(s), 0.0) for s in sums])
    quantile = lambda q: sums[np.searchsorted(cdf, q - 1e-12)] / (n * denominator)  # noqa: E731
    return quantile(0.025), quantile(0.975)


def test_paired_interval_and_test_over_problems_and_seeds_match_a_hand_computation(tmp_path):
    for seed in range(3):
        pruned, random = known_outcomes(seed)
        write_job(tmp_path / f"combined-{seed}", job_config(seed=seed), pruned, random)
    report = write_report(tmp_path).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| combined |") and "(p=" in line)
    mean, low, high, p = re.match(r"\| combined \| (\S+) \[(\S+), (\S+)\] \(p=([\d.]+)", row).groups()
    # d per problem, averaged over its 3 seeds: 1 (p0-p3), 2/3 (p4, p5), -1/3 (p6), 0 (the rest)
    problem_means = [Fraction(1)] * 4 + [Fraction(2, 3)] * 2 + [Fraction(-1, 3)] + [Fraction(0)] * 23
    assert float(mean) == pytest.approx(float(sum(problem_means) / N_PROBLEMS), abs=5e-4)  # 15/90
    # exact sign flips over the 7 non-zero problems, |d|·3 = 3,3,3,3,2,2,1 (sum 17, observed 15):
    # |sum| >= 15 only when the flipped part sums to <= 1 or >= 16: 4 of the 128 flips
    assert float(p) == pytest.approx(4 / 128, abs=5e-4)
    nonzero = [m for m in problem_means if m]
    flips = [sum(s * m for s, m in zip(signs, nonzero, strict=True)) for signs in itertools.product((-1, 1), repeat=7)]
    assert sum(abs(f) >= abs(sum(nonzero)) for f in flips) == 4
    # the interval is the problems-clustered bootstrap (seeds fixed): its exact quantiles
    exact_low, exact_high = exact_bootstrap_quantiles(problem_means, 3)
    assert float(low) == pytest.approx(exact_low, abs=1 / 90 + 5e-4)
    assert float(high) == pytest.approx(exact_high, abs=1 / 90 + 5e-4)
    assert float(low) > 0  # 15 of 90 pairs in one direction: an interval that excludes 0 ...
    # ... where the old per-seed view could not say anything (3 seeds: sign-flip p >= 0.25)
    assert "95% paired bootstrap over 30 problems × 3 seeds" in report
    assert "the 3 seeds held fixed" in report
    assert "exact two-sided sign-flip test over 30 problems" in report
    assert "conditional on these 3 training runs" in report  # p holds the runs fixed; the report says so
    # the per-seed values stay visible: seed 0 +5/30, seed 1 +6/30, seed 2 +4/30
    assert "s0 +0.167, s1 +0.200, s2 +0.133 (wins 3/0/3; min–max over 3 seeds +0.133, +0.200; p over seeds=0.25)" in (
        report
    )


def test_sweep_over_an_estimator_setting_gives_one_row_per_setting(tmp_path):
    for damping, seed in itertools.product((0.1, 1.0), range(3)):
        pruned, random = known_outcomes(seed)
        if damping == 1.0:
            pruned, random = random, pruned  # the other setting loses: averaging them would hide both
        for strategy in ("combined", "random"):
            config = job_config(
                seed=seed,
                **{
                    "estimator.damping": damping,
                    "pruning.strategy": strategy,
                    # where artifacts are cached and how jobs were logged never splits a row
                    "paths.cache_dir": f"/scratch/{seed}",
                    "logger.mode": "online" if seed else "offline",
                },
            )
            write_job(
                tmp_path / f"d{damping}-{strategy}-{seed}", config, pruned, random if strategy != "random" else pruned
            )
    report = write_report(tmp_path).read_text()
    assert "## estimator.damping=0.1" in report and "## estimator.damping=1.0" in report
    assert report.count("| combined | 3 |") == 2 and report.count("| random | 3 |") == 2
    assert re.search(r"\| combined \| \+0\.167 \[", report) and re.search(r"\| combined \| -0\.167 \[", report)
    assert "`estimator.damping`" in report and "cache_dir" not in report.split("## ")[1].split("except")[0]


def test_a_row_names_the_non_default_options_its_strategy_ran_with(tmp_path):
    # every job ran Combined with z-scores after answer_check (nothing differs between them), and
    # length with both settings: the rows must not read as the defaults' ("combined", "length")
    for seed in range(3):
        pruned, random = known_outcomes(seed)
        options = {
            "pruning.combine": "zscore",
            "pruning.prefilter": "answer_check",
            "pruning.alpha": 0.5,
            "pruning.length_keep": "short",
        }
        write_job(tmp_path / f"combined-{seed}", job_config(seed=seed, **options), pruned, random)
        for keep in ("short", "long"):
            config = job_config(
                seed=seed,
                **{**options, "pruning.strategy": "length", "pruning.length_keep": keep, "pruning.combine": "rank"},
            )
            write_job(tmp_path / f"length-{keep}-{seed}", config, pruned, random)
        for combine in ("rank", "zscore"):  # Random ignores combine: two rows that would read the same
            config = job_config(seed=seed, **{**options, "pruning.strategy": "random", "pruning.combine": combine})
            write_job(tmp_path / f"random-{combine}-{seed}", config, pruned, random)
    report = write_report(tmp_path).read_text()
    # no section per setting: the strategies' options are rows of one table
    assert "## all jobs" in report
    # combine and length_keep differ between the jobs: row keys, each named where the strategy reads it
    assert "| combined (pruning.combine=zscore, pruning.prefilter=answer_check) | 3 |" in report
    assert "| length (pruning.length_keep=long, pruning.prefilter=answer_check) | 3 |" in report
    # ... and all of them where two rows would otherwise share a label
    random = "random (pruning.combine=rank, pruning.length_keep=short, pruning.prefilter=answer_check)"
    assert f"| {random} | 3 |" in report and f"| {random.replace('=rank', '=zscore')} | 3 |" in report
    assert "alpha" not in report.split("## all jobs")[1]  # the default is not named


def test_duplicate_jobs_are_refused_not_averaged(tmp_path, capsys):
    for name in ("first", "second"):
        pruned, random = known_outcomes(0)
        write_job(tmp_path / name, job_config(seed=0, **{"paths.cache_dir": name}), pruned, random)
    with pytest.raises(IfexpError, match=r"first and second have the same config and seed 0: refusing to average"):
        write_report(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("ifexp-report: error: first and second") and error.count("\n") == 1


@pytest.mark.parametrize("with_generations", [False, True])
def test_three_seeds_never_give_a_95_percent_interval_over_seeds(tmp_path, with_generations):
    """Without per-problem generations (or with too few problems) only the per-seed range is shown."""
    for strategy, deltas in (("random", [0.0, 0.0, 0.0]), ("combined", [0.125, 0.25, -0.125])):
        for seed, delta in enumerate(deltas):
            config = job_config(seed=seed, **{"pruning.strategy": strategy})
            if with_generations:  # 8 problems: too few for a bootstrap over problems
                wins = round(delta * 8)
                random = {f"p{i}": [i < 2] for i in range(8)}
                pruned = {f"p{i}": [i < 2 + wins] if wins >= 0 else [i >= -wins and i < 2] for i in range(8)}
                write_job(tmp_path / f"{strategy}-{seed}", config, pruned, random)
            else:
                metrics = {f"pass@1/{BENCH}": 0.25 + delta, f"delta_vs_random/{BENCH}": delta}
                write_job(tmp_path / f"{strategy}-{seed}", config, metrics=metrics)
    report = write_report(tmp_path).read_text()
    assert "95%" not in report
    assert "| combined | +0.083 (min–max -0.125, +0.250)" in report
    assert "min–max over 3 seeds (not a confidence interval" in report


def test_many_seeds_resample_seeds_too(tmp_path):
    for seed in range(6):
        pruned, random = known_outcomes(seed % 3)
        write_job(tmp_path / f"combined-{seed}", job_config(seed=seed), pruned, random)
    report = write_report(tmp_path).read_text()
    assert "95% paired bootstrap over 30 problems × 6 seeds (problems and seeds resampled independently" in report


def test_versus_pairs_two_strategies_models_on_the_seeds_both_have(tmp_path, capsys):
    """--versus perplexity: Combined's model against perplexity's, problem by problem and seed by seed
    (each from its own job); a seed only one of them has is left out, and the report says so."""
    for seed in range(3):
        pruned, random = known_outcomes(seed)
        write_job(tmp_path / f"combined-{seed}", job_config(seed=seed), pruned, random)
        # perplexity's model answers exactly as Random's: Combined vs perplexity is then the known Δ
        write_job(
            tmp_path / f"perplexity-{seed}", job_config(seed=seed, **{"pruning.strategy": "perplexity"}), random, random
        )
    pruned, random = known_outcomes(0)
    write_job(tmp_path / "combined-3", job_config(seed=3), pruned, random)
    main([str(tmp_path), "--versus", "perplexity"])
    report = (tmp_path / "report.md").read_text()
    versus = report.split("### Δ pass@1 vs perplexity (paired per problem and seed)", 1)[1].split("\n#", 1)[0]
    row = next(line for line in versus.splitlines() if line.startswith("| combined |"))
    mean, p = re.match(r"\| combined \| (\S+) \[\S+, \S+\] \(p=([\d.]+)", row).groups()
    assert float(mean) == pytest.approx(15 / 90, abs=5e-4)  # seeds 0-2 only, as the hand computation above
    assert float(p) == pytest.approx(4 / 128, abs=5e-4)
    assert "on seeds 0, 1, 2 only, the ones both rows have (left out: 3)" in versus
    assert "s0 +0.167, s1 +0.200, s2 +0.133 (wins 3/0/3" in versus
    assert "| perplexity |" not in versus  # the baseline is not compared with itself

    main([str(tmp_path), "--versus", "length"])
    assert "No row `length` in this section to compare with (--versus length)." in (tmp_path / "report.md").read_text()


def test_versus_refuses_an_ambiguous_strategy(tmp_path):
    for keep in ("low", "high"):
        pruned, random = known_outcomes(0)
        config = job_config(seed=0, **{"pruning.strategy": "perplexity"})
        config["pruning"]["perplexity_keep"] = keep
        write_job(tmp_path / f"perplexity-{keep}", config, pruned, random)
    with pytest.raises(IfexpError, match=r"--versus perplexity: 2 rows of that strategy .*name one by its label"):
        write_report(tmp_path, ["perplexity"])
    assert (
        "### Δ pass@1 vs perplexity (pruning.perplexity_keep=low)"
        in write_report(tmp_path, ["perplexity (pruning.perplexity_keep=low)"]).read_text()
    )


def test_across_pairs_each_row_with_the_same_row_under_the_reference_setting(tmp_path, capsys):
    """--across train.mixed_precision=no: bf16's Combined against fp32's Combined, and Random against
    Random, problem by problem and seed by seed; ΔΔ = Δ vs Random under bf16 − under fp32."""
    for seed in range(3):
        pruned, random = known_outcomes(seed)
        for precision in ("no", "bf16"):
            config = job_config(seed=seed, **{"train.mixed_precision": precision})
            ours = dict(pruned, p0=[False]) if precision == "bf16" else pruned  # bf16 loses p0 in every seed
            write_job(tmp_path / f"{precision}-combined-{seed}", config, ours, random)
            config = job_config(seed=seed, **{"train.mixed_precision": precision, "pruning.strategy": "random"})
            # bf16's Random model (its job's both arms) also solves p10 in seed 0
            theirs = dict(random, p10=[True]) if precision == "bf16" and seed == 0 else random
            write_job(tmp_path / f"{precision}-random-{seed}", config, theirs, theirs)
    pruned, random = known_outcomes(0)
    write_job(tmp_path / "bf16-combined-3", job_config(seed=3, **{"train.mixed_precision": "bf16"}), pruned, random)

    main([str(tmp_path), "--across", "train.mixed_precision=no"])
    report = (tmp_path / "report.md").read_text()
    assert report.count("### Against train.mixed_precision=no") == 1  # only in the other section
    across = report.split("### Against train.mixed_precision=no", 1)[1].split("\n## ", 1)[0]
    passes, deltas = across.split("ΔΔ (Δ vs Random here − there):", 1)
    combined = next(line for line in passes.splitlines() if line.startswith("| combined |"))
    assert re.match(r"\| combined \| -0\.033 ", combined)  # p0 lost: −1 of 30 problems in each seed
    random_row = next(line for line in passes.splitlines() if line.startswith("| random |"))
    assert re.match(r"\| random \| \+0\.011 ", random_row)  # +1 of 90 (problem, seed) pairs
    assert "on seeds 0, 1, 2 only, the ones both rows have (left out: 3)" in passes
    combined = next(line for line in deltas.splitlines() if line.startswith("| combined |"))
    assert re.match(r"\| combined \| -0\.033 ", combined)  # its Random arm is the same in both
    assert "| random |" not in deltas.split("Δ pass@1 per seed:")[0]
    assert "s0 -0.033, s1 -0.033, s2 -0.033" in across

    with pytest.raises(SystemExit):
        main([str(tmp_path), "--across", "train.lr=0.002"])
    assert "expected KEY=VALUE with KEY a setting the sections differ in (`train.mixed_precision`)" in (
        capsys.readouterr().err
    )


def test_sign_flip_test_is_exact():
    assert sign_flip_p_value([0.1, 0.2, 0.3]) == pytest.approx(2 / 8)  # the smallest p with 3 seeds
    assert sign_flip_p_value([0.0, 0.0]) == 1.0
    assert sign_flip_p_value([1.0, -1.0]) == 1.0
    # one seed, greedy: the exact McNemar test (6 discordant pairs one way, 1 the other, of 30 problems)
    differences = [Fraction(1)] * 6 + [Fraction(-1)] + [Fraction(0)] * 23
    assert sign_flip_p_value(differences) == pytest.approx(2 * (1 + 7) / 2**7)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert sign_flip_p_value(differences) == pytest.approx(scipy_stats.binomtest(6, 7).pvalue)


def test_rows_that_share_a_test_share_one_legend_line_with_each_rows_count(tmp_path):
    for seed in range(3):
        pruned, random = known_outcomes(seed)
        write_job(tmp_path / f"combined-{seed}", job_config(seed=seed), pruned, random)
        # oracle's model solves one problem fewer (p3) than combined's, in every seed
        write_job(
            tmp_path / f"oracle-{seed}",
            job_config(seed=seed, **{"pruning.strategy": "oracle"}),
            {**pruned, "p3": [False]},
            random,
        )
    report = write_report(tmp_path).read_text()
    legend = [line for line in report.splitlines() if line.startswith(f"- Δ {BENCH}")]
    assert len(legend) == 1, legend
    assert legend[0].endswith("problems with a non-zero Δ: combined 7, oracle 6.")


def test_a_p_below_the_printed_precision_is_not_printed_as_zero():
    estimate = Estimate(mean=0.2, per_seed={0: 0.2}, low=0.1, high=0.3, interval="bootstrap", p=2e-7)
    assert delta_text(estimate).endswith("(p<0.001)")
    assert delta_text(Estimate(mean=0.2, per_seed={0: 0.2}, p=0.0404)).endswith("(p=0.040)")
    # 10 seeds all one way: the exact sign-flip p over seeds is 2/1024, below its 2-digit precision
    ten_seeds = Estimate(mean=0.2, per_seed={s: 0.2 for s in range(10)}, p_seeds=sign_flip_p_value([0.2] * 10))
    assert "p over seeds<0.01" in per_seed_text(ten_seeds)
    assert "p over seeds=0.25" in per_seed_text(Estimate(mean=0.2, per_seed={0: 0.1, 1: 0.2, 2: 0.3}, p_seeds=0.25))


def test_report_keeps_flaws_compute_and_figures(tmp_path):
    shared = tmp_path / "cache" / "sft" / "abc"  # one artifact every job reused: counted once
    shared.mkdir(parents=True)
    (shared / "manifest.json").write_text(json.dumps({"stage": "sft", "seconds": 5.0}))
    for strategy in ("random", "combined"):
        for seed in range(3):
            pruned, random = known_outcomes(seed)
            extra = {"flaw/precision": 0.5, "flaw/recall": 0.5, "time/eval_s": 10.0, "artifact/sft_full": str(shared)}
            if strategy == "combined":  # a ranking: AUROC in all and per flaw family
                extra |= {"flaw/auroc": 0.6 + 0.1 * seed, "flaw/auroc/answer_preserving": 0.9}
            config = job_config(seed=seed, **{"pruning.strategy": strategy})
            write_job(
                tmp_path / f"{strategy}-{seed}", config, random if strategy == "random" else pruned, random, extra
            )
    (tmp_path / "combined-3").mkdir()  # a job killed before it wrote metrics.json: named, not silently left out
    (tmp_path / "combined-3" / "run.log").write_text("sft: computing ...\n")
    report = write_report(tmp_path).read_text()
    assert "Not read: 1 job folders have no metrics.json" in report and "`combined-3`" in report
    assert "| combined | 3 | 0.300 [" in report  # the strategy's pass@1 over problems × seeds
    assert "| random | 3 | 0.133 [" in report
    assert "| strategy | precision | recall | AUROC | AUROC (answer-preserving) |" in report
    assert "| combined | 0.500 | 0.500 | 0.700 | 0.900 |" in report
    assert "| random | 0.500 | 0.500 |  |  |" in report
    assert (tmp_path / "delta_vs_random.png").stat().st_size > 0
    assert (tmp_path / "flaw_detection.png").stat().st_size > 0
    assert "| sft | 1 | 5 | 5 |" in report
    assert "| combined-2 | combined | 2 |" in report


def test_a_job_whose_saved_config_is_not_the_one_it_ran_with_is_refused(tmp_path):
    """metrics.json records the digest of the config the job ran with; a .hydra/config.yaml
    written over afterwards (by hand, or by Hydra with hydra.output_subdir set) cannot label it."""
    from ifexp.job_identity import config_digest

    config = job_config(seed=0)
    pruned, random = known_outcomes(0)
    write_job(tmp_path / "job", config, pruned, random)
    metrics_path = tmp_path / "job" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**metrics, "config_digest": config_digest(config)}))
    write_report(tmp_path)  # consistent: read
    (tmp_path / "job" / ".hydra" / "config.yaml").write_text(yaml.safe_dump(job_config(seed=0, **{"train.lr": 0.01})))
    with pytest.raises(IfexpError, match=r"job: \.hydra/config\.yaml \(config digest \w+\) is not the config"):
        write_report(tmp_path)


def test_job_folders_linked_into_a_sweep_are_read_once_each(tmp_path):
    """Two sweeps reported together through symlinks: every linked job is read (not silently
    dropped), a job reached by two links counts once, and a link cycle does not hang the walk."""
    other_sweep, root = tmp_path / "other_sweep", tmp_path / "together"
    for seed in range(3):
        pruned, random = known_outcomes(seed)
        write_job(other_sweep / f"combined-seed{seed}", job_config(seed=seed), pruned, random)
        pruned, random = known_outcomes(seed)
        write_job(root / f"oracle-seed{seed}", job_config(seed=seed, **{"pruning.strategy": "oracle"}), pruned, random)
    (root / "linked").symlink_to(other_sweep, target_is_directory=True)
    (root / "linked_again").symlink_to(other_sweep / "combined-seed0", target_is_directory=True)
    (other_sweep / "combined-seed1" / "back").symlink_to(root, target_is_directory=True)
    report = write_report(root).read_text()
    assert "6 jobs read" in report
    assert re.search(r"^\| combined \| 3 \|", report, re.MULTILINE)
    assert re.search(r"^\| oracle \| 3 \|", report, re.MULTILINE)


def test_jobs_that_differ_only_in_engine_reuse_are_one_row(tmp_path):
    """engine.reuse cannot change a result (ifexp.schema.CANNOT_CHANGE_A_RESULT): no section of its own."""
    for seed, reuse in ((0, "auto"), (1, "never"), (2, "always")):
        pruned, random = known_outcomes(seed)
        write_job(tmp_path / f"combined-{seed}", job_config(seed=seed, **{"engine.reuse": reuse}), pruned, random)
    report = write_report(tmp_path).read_text()
    assert "## all jobs" in report and "## engine.reuse" not in report
    assert report.count("| combined | 3 |") == 1
    assert "`engine.reuse`, which cannot change a result" in report


def test_a_job_that_recorded_its_digest_before_engine_reuse_joined_the_list_is_read(tmp_path):
    """Its metrics.json names the digest of its config with engine.reuse counted (ifexp.job_identity)."""
    from ifexp.job_identity import JOINED_CANNOT_CHANGE_A_RESULT, config_digest

    config = job_config(seed=0, **{"engine.reuse": "auto"})
    earlier = config_digest(config, counting=JOINED_CANNOT_CHANGE_A_RESULT)
    assert earlier != config_digest(config)
    pruned, random = known_outcomes(0)
    write_job(tmp_path / "job", config, pruned, random, metrics={"config_digest": earlier})
    assert "| combined | 1 |" in write_report(tmp_path).read_text()


# Five replicates (a fresh data draw and theta* each): the strategy's model solves `extra[r]` more of
# 24 problems than Random's in replicate r, so the per-replicate Δ are extra[r] / 24.
REPLICATE_EXTRA = [2, 5, 1, 4, 3]


def write_replicates(root, extra=REPLICATE_EXTRA, shared=False, name="combined", **overrides):
    """One job per replicate r (seed r; data_seed and scorer_seed r, or 0 for all when shared), its
    config job_config's with `overrides`; its folder `name`-r."""
    for r, wins in enumerate(extra):
        draw = 0 if shared else r
        config = job_config(seed=r, **{"dataset.data_seed": draw, "scorer_seed": draw, **overrides})
        random = {f"r{draw}-p{i}": [i < 6] for i in range(24)}
        pruned = {f"r{draw}-p{i}": [i < 6 + wins] for i in range(24)}
        replicate = {"replicate": f"data_seed={draw},scorer_seed={draw}"}
        write_job(root / f"{name}-{r}", config, pruned, random, metrics=replicate)


def t_interval_text(per_replicate):
    """mean [95% t-interval] of per-replicate values, as the report prints them, by hand."""
    from scipy.stats import t

    values = np.asarray(per_replicate, dtype=float)
    mean, half = values.mean(), t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def test_replicates_are_the_unit_a_t_interval_over_them_with_the_bootstrap_conditional(tmp_path):
    from scipy.stats import t

    write_replicates(tmp_path)
    report = write_report(tmp_path).read_text()
    per_replicate = np.array(REPLICATE_EXTRA) / 24
    half = t.ppf(0.975, 4) * per_replicate.std(ddof=1) / np.sqrt(5)
    mean = per_replicate.mean()
    assert f"| combined | {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]" in report
    assert "95% t-interval over 5 replicates (each a fresh draw of the data, of theta* and of its answers" in report
    assert "secondary, conditional on these selections: 95% paired bootstrap over 120 problems" in report
    assert "p: descriptive, the training runs held fixed" in report
    assert "p over replicates=0.06" in report  # 5 replicates, all Δ > 0: the smallest possible, 2/2^5
    assert "conservative" not in report
    # the brackets, the figure's whiskers and the W&B table are the t-interval's too
    assert "`[a, b]` is a 95% t-interval over replicates, " in report
    assert "whiskers: 95% t-interval over 5 replicates" in report
    from ifexp.report.jobs import load_jobs
    from ifexp.report.rows import summarise
    from ifexp.report.wandb_run import COLUMNS, table_rows

    (row,) = table_rows(summarise(load_jobs(tmp_path), tmp_path))
    low, high = row[COLUMNS.index("low")], row[COLUMNS.index("high")]
    assert (round(low, 3), round(high, 3)) == (round(mean - half, 3), round(mean + half, 3))


def test_replicates_whose_values_are_all_equal_get_no_zero_width_interval(tmp_path):
    # a selection that is Random's own subset in every replicate: Δ 0 each time, not a certain 0
    write_replicates(tmp_path, extra=[2, 2, 2])
    report = write_report(tmp_path).read_text()
    legend = next(line for line in report.splitlines() if line.startswith("- Δ gsm:"))
    assert "no interval: the values of the 3 replicates (each a fresh draw" in legend
    assert "are all equal, and a t-interval needs their spread" in legend
    assert f"| combined | {2 / 24:+.3f} [" not in report


def test_seeds_under_one_replicate_say_their_interval_is_conditional_on_one_draw(tmp_path):
    write_replicates(tmp_path, shared=True)
    report = write_report(tmp_path).read_text()
    assert "t-interval" not in report
    assert "one draw of the data and theta* (its 5 seeds share the selection's inputs)" in report


def test_one_seed_of_one_replicate_says_its_interval_and_p_hold_the_training_runs_fixed(tmp_path):
    # the headline's single replicate: a selection that was Random's but one trace landed 0.050 below
    # Random with a bootstrap over problems excluding 0; the labels must say what that cannot see
    pruned, random = known_outcomes(0)
    write_job(tmp_path / "combined-0", job_config(seed=0), pruned, random)
    report = write_report(tmp_path).read_text()
    legend = next(line for line in report.splitlines() if line.startswith("- Δ gsm: 95%"))
    assert "problems resampled; one seed: conditional on that training run of each model" in legend
    assert "conditional on this one training run of each model" in legend
    assert "one draw of the data and theta*: conditional on that one selection" in legend


def test_replicates_that_share_their_test_questions_are_named_as_not_fresh_draws(tmp_path):
    # the bug of 2026-12-07: data seeds r and r + 1 drew the same problems shifted by one
    write_replicates(tmp_path)
    for r in range(len(REPLICATE_EXTRA)):
        start = 1 if r == 1 else 100 * r  # replicate 1 holds replicate 0's questions 1-23 and one new one
        records = [
            {"id": f"q{i}", "question": f"How many legs? {i}", "correct": [True]} for i in range(start, start + 24)
        ]
        path = tmp_path / f"combined-{r}" / "generations" / "pruned_d.jsonl"  # the in-domain set, named after d
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    report = write_report(tmp_path).read_text()
    assert (
        "**Replicates that share their test questions: `data_seed=0,scorer_seed=0` and `data_seed=1,scorer_seed=1` "
        "share 23 of 24.**"
    ) in report
    (tmp_path / "report.md").unlink()
    for r in (0, 1):  # fresh draws: nothing to say
        path = tmp_path / f"combined-{r}" / "generations" / "pruned_d.jsonl"
        path.write_text(path.read_text().replace("How many legs?", f"Replicate {r}: how many legs?"))
    assert "share their test questions" not in write_report(tmp_path).read_text()


def test_versus_and_across_rows_over_replicates_get_the_t_interval_over_replicates(tmp_path):
    """Combined vs perplexity (--versus) and Combined at p=0.5 vs p=0.25 (--across) over 5 replicates:
    the interval is the t-interval over the per-replicate Δ, named so, the bootstrap kept as conditional."""
    write_replicates(tmp_path)  # combined at p=0.25 solves 6 + REPLICATE_EXTRA[r] of 24, Random 6
    perplexity_extra = [1, 1, 2, 0, 3]
    write_replicates(tmp_path, perplexity_extra, name="perplexity", **{"pruning.strategy": "perplexity"})
    half_extra = [4, 6, 1, 7, 3]
    write_replicates(tmp_path, half_extra, name="combined-half", **{"pruning.fraction": 0.5})
    main([str(tmp_path), "--versus", "perplexity", "--across", "pruning.fraction=0.25"])
    report = (tmp_path / "report.md").read_text()

    versus = report.split("### Δ pass@1 vs perplexity", 1)[1].split("\n#", 1)[0]
    expected = t_interval_text((np.array(REPLICATE_EXTRA) - perplexity_extra) / 24)
    assert f"| combined | {expected} (p=" in versus
    assert "95% t-interval over 5 replicates (each a fresh draw" in versus
    assert "secondary, conditional on these selections: 95% paired bootstrap over 120 problems" in versus
    assert "p: descriptive, the training runs held fixed" in versus
    assert "mean over 5 replicates +0.067; p over replicates=" in versus

    across = report.split("### Against pruning.fraction=0.25", 1)[1].split("\n## ", 1)[0]
    passes, deltas = across.split("ΔΔ (Δ vs Random here − there):", 1)
    expected = t_interval_text((np.array(half_extra) - REPLICATE_EXTRA) / 24)
    assert f"| combined | {expected} (p=" in passes  # the Random arms agree: pass@1 and ΔΔ are the same
    assert f"| combined | {expected} (p=" in deltas
    assert "95% t-interval over 5 replicates" in passes


def test_a_seed_whose_two_rows_are_different_draws_is_one_unit_named_by_both():
    """--across the data seed: a seed's two jobs are two draws; the pair is one unit, not pooled with
    another seed that happens to share one of them."""
    from ifexp.report.jobs import Cell, Job
    from ifexp.report.rows import replicates_of

    def cell(replicates):
        jobs = [Job(f"j{seed}", "combined", seed, {}, replicate) for seed, replicate in replicates.items()]
        return Cell((), (), "combined", "combined", jobs)

    ours, theirs = cell({0: "a", 1: "a", 2: "c"}), cell({0: "b", 1: "a", 3: "d"})
    assert replicates_of(ours) == {0: "a", 1: "a", 2: "c"}
    assert replicates_of(ours, theirs) == {0: "a vs b", 1: "a", 2: "c", 3: "d"}
