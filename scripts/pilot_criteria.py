"""The plan's four criteria on pilot replicates, and the best cheap baseline (docs/results.md, "Plan for
the next headline"): read from a pilot sweep's jobs and, for θ*'s query sets, `ifexp-bench flaws`
outputs of the same replicates.

    .venv/bin/python scripts/pilot_criteria.py outputs/sweeps/slips_pilot [--flaws flaws100.json ...]

Per replicate (a job's `replicate` in metrics.json): (1) flaw rate in [0.1, 0.3]; (2) every flaw
kind's lexical ceiling <= 0.8; (3) the full-data model's in-domain pass@1 (`eval.eval_full=true`) in
[0.3, 0.7] and |Q_C|, |Q_I| >= 30; (4) headroom, the oracle's Δ vs Random: > 0 in each replicate
and >= +0.03 in the mean. Then each cheap baseline's Δ vs Random per replicate, with its paired
disagreements and SE over the test problems (the job's generations), and the best cheap baseline: the
highest mean Δ vs Random among those that ran on every replicate (the plan's primary opponent); every
other strategy's Δ below them (on a headline sweep: the influence strategies). Only the jobs at one
pruning fraction are read (`--fraction`, 0.25). Prints Markdown tables; a criterion it cannot read is
`n/a` and fails. With `--per-replicate`, instead, one table per replicate: docs/results.md's
"Headline replicates" tables (each strategy's pass@1, Δ, flaw AUROC, flawed traces removed and
removals shared with Random's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean, pvariance
from typing import Any

from ifexp import outputs
from ifexp.report.jobs import read_pass_rates
from ifexp.tasks import FAMILIES

CHEAP_BASELINES = ("answer_check", "length", "embedding", "perplexity", "theta_loss", "difficulty")
CEILING_PREFIX = "flaw/lexical_ceiling/"
MIN_QUERIES = 30
RUN_DIR = "run_dir"  # not a metric: where read_jobs found the job


def read_jobs(sweep: Path, fraction: float = 0.25) -> dict[str, dict[str, dict[str, Any]]]:
    """metrics.json of every finished job under `sweep` that pruned `fraction`, by replicate, then by
    strategy; each with its folder under RUN_DIR. Two jobs of one strategy in one replicate (another
    config beside it in the same sweep folder) are an error, not one of them silently kept."""
    replicates: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        metrics = {**json.loads(path.read_text()), RUN_DIR: path.parent}
        if metrics["fraction"] != fraction:
            continue
        jobs = replicates.setdefault(metrics["replicate"], {})
        if metrics["strategy"] in jobs:
            raise ValueError(
                f"{path.parent} and {jobs[metrics['strategy']][RUN_DIR]}: two {metrics['strategy']} jobs of "
                f"replicate {metrics['replicate']} at fraction {fraction}; give each config its own sweep folder"
            )
        jobs[metrics["strategy"]] = metrics
    return dict(sorted(replicates.items()))


def query_counts(flaws_files: list[Path]) -> dict[str, tuple[int, int]]:
    """(|Q_C|, |Q_I|) by replicate, from `ifexp-bench flaws` outputs (their `seed=` override)."""
    counts = {}
    for path in flaws_files:
        bench = json.loads(path.read_text())
        seed = next(o.split("=", 1)[1] for o in bench["overrides"] if o.startswith("seed="))
        queries = bench["queries"]
        counts[f"data_seed={seed},scorer_seed={seed}"] = (queries["n_correct"], queries["n_incorrect"])
    return counts


def criteria(jobs: dict[str, dict[str, Any]], queries: tuple[int, int] | None, benchmark: str) -> dict[str, Any]:
    """One replicate's numbers for the four criteria, and whether each holds (None: not measured)."""
    rate = shared_value(jobs, "n_train_flawed") / shared_value(jobs, "n_train")
    ceiling_keys = {key for job in jobs.values() for key in job if key.startswith(CEILING_PREFIX)}
    ceilings = {
        key.removeprefix(CEILING_PREFIX): shared_value(jobs, key)
        for key in sorted(ceiling_keys)
        if key.removeprefix(CEILING_PREFIX) not in FAMILIES
    }
    full = shared_value(jobs, outputs.pass_key(benchmark, "full"))
    oracle = jobs.get("oracle", {}).get(outputs.delta_key(benchmark))
    competent = None
    if full is not None and queries is not None:
        competent = 0.3 <= full <= 0.7 and min(queries) >= MIN_QUERIES
    return {
        "flaw_rate": rate,
        "ok_rate": 0.1 <= rate <= 0.3,
        "ceilings": ceilings,
        "ok_ceilings": bool(ceilings) and max(ceilings.values()) <= 0.8,
        "full_pass": full,
        "queries": queries,
        "ok_competent": competent,
        "headroom": oracle,
        "ok_headroom": None if oracle is None else oracle > 0,
    }


def baseline_deltas(replicates: dict[str, dict[str, dict[str, Any]]], benchmark: str) -> dict[str, list[float]]:
    """Each cheap baseline's Δ vs Random in every replicate where it ran."""
    key = outputs.delta_key(benchmark)
    return {
        name: [jobs[name][key] for jobs in replicates.values() if name in jobs]
        for name in CHEAP_BASELINES
        if any(name in jobs for jobs in replicates.values())
    }


def paired_vs_random(job: dict[str, Any], benchmark: str) -> tuple[int, int, float] | None:
    """(problems only the job's model answers right, only Random's, the paired SE of Δ) over the test
    problems, from the job's generations of both models; None where they are not saved."""
    files = [outputs.generations_path(job[RUN_DIR], arm, benchmark) for arm in ("pruned", "random")]
    if not all(path.exists() for path in files):
        return None
    pruned, random = (read_pass_rates(path) for path in files)
    if pruned.keys() != random.keys():
        raise ValueError(f"{job[RUN_DIR]}: the two models were graded on different problems")
    diffs = [float(pruned[problem] - random[problem]) for problem in pruned]
    return sum(d > 0 for d in diffs), sum(d < 0 for d in diffs), (pvariance(diffs) / len(diffs)) ** 0.5


def best_cheap_baseline(deltas: dict[str, list[float]], n_replicates: int) -> str | None:
    """The cheap baseline with the highest mean Δ vs Random among those measured on every replicate."""
    complete = {name: mean(values) for name, values in deltas.items() if len(values) == n_replicates}
    return max(complete, key=complete.__getitem__) if complete else None


def _paired_cell(job: dict[str, Any], benchmark: str) -> str:
    paired = paired_vs_random(job, benchmark)
    delta = f"{job[outputs.delta_key(benchmark)]:+.3f}"
    return delta if paired is None else f"{delta} ({paired[0]} / {paired[1]}, {paired[2]:.3f})"


def shared_value(jobs: dict[str, dict[str, Any]], key: str) -> Any:
    """A value every job of one replicate that recorded `key` must agree on (the data, θ*'s answers,
    Random's model); None where none recorded it."""
    values = {job[key] for job in jobs.values() if key in job}
    if len(values) > 1:
        raise ValueError(f"{key} differs between the jobs of one replicate: {sorted(values)}")
    return next(iter(values), None)


def replicate_table(jobs: dict[str, dict[str, Any]], benchmark: str) -> list[str]:
    """One replicate as docs/results.md's "Headline replicates" give it: a line on the data and θ*'s
    answers, then per strategy (the oracle first, the rest by Δ) its model's pass@1, Δ vs Random with
    the paired disagreements and SE, the flaw AUROC of its removal ranking, the flawed traces among
    those it removed (recall × flawed) and how many of its removals Random's selection shares (a
    selection that is Random's but a few traces measures training noise, not the strategy)."""
    flawed, removed = shared_value(jobs, "n_train_flawed"), shared_value(jobs, "n_train_removed")
    carrying = outputs.carrying_key("", correct=False)  # the prefix of every kind's key
    kinds = sorted({key.removeprefix(carrying) for job in jobs.values() for key in job if key.startswith(carrying)})
    ceiling = shared_value(jobs, "flaw/lexical_ceiling")
    header = (
        f"{shared_value(jobs, 'n_train')} traces, {flawed} flawed; lexical ceiling "
        f"{'n/a' if ceiling is None else f'{ceiling:.3f}'}; |Q_C| {shared_value(jobs, 'queries/n_correct')}, "
        f"|Q_I| {shared_value(jobs, 'queries/n_incorrect')}"
    )
    for kind in kinds:
        header += (
            f"; θ*'s wrong answers carrying {kind}: {shared_value(jobs, outputs.carrying_key(kind, correct=False))} "
            f"(right ones: {shared_value(jobs, outputs.carrying_key(kind, correct=True))})"
        )
    header += f"; Random's model pass@1 {shared_value(jobs, outputs.pass_key(benchmark, 'random')):.3f}"
    lines = [
        header,
        "",
        "| strategy | pass@1 | Δ vs Random (only / only, paired SE) | flaw AUROC | "
        f"flawed among the {removed} removed | removals shared with Random's |",
        "|---|---|---|---|---|---|",
    ]
    delta_key = outputs.delta_key(benchmark)
    others = sorted((name for name in jobs if name not in ("oracle", "random")), key=lambda n: -jobs[n][delta_key])
    for name in [*(["oracle"] if "oracle" in jobs else []), *others]:
        job = jobs[name]
        auroc, flawed_out, shared = job.get("flaw/auroc"), flawed_removed(job), shared_removals(job, jobs.get("random"))
        cells = [
            f"{job[outputs.pass_key(benchmark)]:.3f}",
            _paired_cell(job, benchmark),
            "n/a" if auroc is None else f"{auroc:.3f}",
            "n/a" if flawed_out is None else f"{flawed_out} of {flawed}",
            "n/a" if shared is None else f"{shared[0]} of {shared[1]}",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def flawed_removed(job: dict[str, Any]) -> int | None:
    """How many flawed training examples the job removed (its flaw recall × the flawed count); None
    where it recorded no recall."""
    recall, flawed = job.get("flaw/recall"), job.get("n_train_flawed")
    return None if recall is None or flawed is None else round(recall * flawed)


def shared_removals(job: dict[str, Any], random: dict[str, Any] | None) -> tuple[int, int] | None:
    """(how many of the job's removed examples Random's selection, the replicate's random job, also
    removed; how many the job removed); None where either selection.json is missing."""
    if random is None:
        return None
    folders = (job[RUN_DIR], random[RUN_DIR])
    if not all((Path(folder) / outputs.SELECTION).exists() for folder in folders):
        return None
    ours, randoms = (set(outputs.read_selection(folder)["removed"]) for folder in folders)
    return len(ours & randoms), len(ours)


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--flaws", type=Path, nargs="*", default=[], help="ifexp-bench flaws outputs")
    parser.add_argument("--benchmark", default="leg_counting", help="the in-domain benchmark's name")
    parser.add_argument("--fraction", type=float, default=0.25, help="only the jobs that pruned this fraction")
    parser.add_argument(
        "--per-replicate", action="store_true", help="each replicate's table (docs/results.md's headline tables)"
    )
    args = parser.parse_args()
    replicates = read_jobs(args.sweep, args.fraction)
    if args.per_replicate:
        for replicate, jobs in replicates.items():
            print("\n".join([f"### {replicate}", "", *replicate_table(jobs, args.benchmark), ""]))
        return
    counts = query_counts(args.flaws)
    columns = "flaw rate | highest kind ceiling | full-data pass@1 | \\|Q_C\\|, \\|Q_I\\| | oracle − Random"
    print(f"| replicate | {columns} | (1) | (2) | (3) | (4) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    headrooms = []
    for replicate, jobs in replicates.items():
        c = criteria(jobs, counts.get(replicate), args.benchmark)
        kind, ceiling = max(c["ceilings"].items(), key=lambda item: item[1], default=("n/a", float("nan")))
        full = "n/a" if c["full_pass"] is None else f"{c['full_pass']:.3f}"
        headroom = "n/a" if c["headroom"] is None else f"{c['headroom']:+.3f}"
        headrooms.append(c["headroom"])
        marks = [_mark(c[k]) for k in ("ok_rate", "ok_ceilings", "ok_competent", "ok_headroom")]
        cells = [f"{c['flaw_rate']:.3f}", f"{kind} {ceiling:.3f}", full, str(c["queries"] or "n/a"), headroom, *marks]
        print(f"| {replicate} | " + " | ".join(cells) + " |")
    measured = [h for h in headrooms if h is not None]
    if measured:
        print(f"\nheadroom, mean over {len(measured)} replicates: {mean(measured):+.3f} (criterion 4: >= +0.030)")
    names = list(replicates)
    print("\nΔ vs Random per replicate (disagreements: the strategy's model only / Random's only; paired SE)\n")
    print(f"| strategy | {' | '.join(names)} | mean |")
    print("|---" * (len(names) + 2) + "|")
    deltas = baseline_deltas(replicates, args.benchmark)
    others = sorted({name for jobs in replicates.values() for name in jobs} - {"oracle", "random", *deltas})
    for name in ["oracle", *sorted(deltas, key=lambda name: -mean(deltas[name])), *others]:
        ran = [jobs[name] for jobs in replicates.values() if name in jobs]
        if not ran:
            continue
        cells = [_paired_cell(jobs[name], args.benchmark) if name in jobs else "—" for jobs in replicates.values()]
        average = mean(job[outputs.delta_key(args.benchmark)] for job in ran)
        print(f"| {name} | {' | '.join(cells)} | {average:+.3f} over {len(ran)} |")
    best = best_cheap_baseline(deltas, len(names))
    if best is None:
        print(f"\nbest cheap baseline: not named (none of {', '.join(CHEAP_BASELINES)} ran on every replicate)")
    else:
        print(
            f"\nbest cheap baseline (highest mean Δ vs Random over all {len(names)} replicates): {best}"
            " (the plan's opponent when these are the pilots; a headline sweep keeps the one the plan named)"
        )


if __name__ == "__main__":
    main()
