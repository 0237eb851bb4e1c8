"""The plan's four criteria on pilot replicates, and the best cheap baseline (docs/results.md, "Plan for
the next headline"): read from a pilot sweep's jobs and, for θ*'s query sets, `ifexp-bench flaws`
outputs of the same replicates.

    .venv/bin/python scripts/pilot_criteria.py outputs/sweeps/slips_pilot [--flaws flaws100.json ...]

Per replicate (a job's `replicate` in metrics.json): (1) flaw rate in [0.1, 0.3]; (2) every flaw
kind's lexical ceiling <= 0.8; (3) the full-data model's in-domain pass@1 (`eval.eval_full=true`) in
[0.3, 0.7] and |Q_C|, |Q_I| >= 30; (4) headroom, the oracle's Δ vs Random: > 0 in each replicate
and >= +0.03 in the mean. Then each cheap baseline's Δ vs Random, mean over the replicates.
Prints a Markdown table; a criterion it cannot read is `n/a` and fails.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean
from typing import Any

from ifexp import outputs
from ifexp.tasks import FAMILIES

CHEAP_BASELINES = ("answer_check", "length", "embedding", "perplexity", "theta_loss", "difficulty")
CEILING_PREFIX = "flaw/lexical_ceiling/"
MIN_QUERIES = 30


def read_jobs(sweep: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """metrics.json of every finished job under `sweep`, by replicate, then by strategy."""
    replicates: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        replicates.setdefault(metrics["replicate"], {})[metrics["strategy"]] = metrics
    return replicates


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
    any_job = next(iter(jobs.values()))
    rate = any_job["n_train_flawed"] / any_job["n_train"]
    ceilings = {
        key.removeprefix(CEILING_PREFIX): value
        for key, value in any_job.items()
        if key.startswith(CEILING_PREFIX) and key.removeprefix(CEILING_PREFIX) not in FAMILIES
    }
    full_key = outputs.pass_key(benchmark, "full")
    full = next((job[full_key] for job in jobs.values() if full_key in job), None)
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


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--flaws", type=Path, nargs="*", default=[], help="ifexp-bench flaws outputs")
    parser.add_argument("--benchmark", default="leg_counting", help="the in-domain benchmark's name")
    args = parser.parse_args()
    replicates = read_jobs(args.sweep)
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
    print("\n| cheap baseline | Δ vs Random per replicate | mean |")
    print("|---|---|---|")
    deltas = baseline_deltas(replicates, args.benchmark)
    for name, values in sorted(deltas.items(), key=lambda item: -mean(item[1])):
        print(f"| {name} | {', '.join(f'{v:+.3f}' for v in values)} | {mean(values):+.3f} |")


if __name__ == "__main__":
    main()
