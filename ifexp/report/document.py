"""report.md, part by part: what the rows are over, then per section the pass@1, Δ vs Random, --versus,
--across and flaw-detection tables, then the compute per stage, the figures and the jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ifexp.outputs import DESCRIPTION_KEYS, HYDRA_DIR, METRICS, RUN_LOG, SAVED_CONFIG, SEED_KEY, STRATEGY_KEY
from ifexp.report.jobs import (
    EXCLUDED_FROM_GROUPING,
    METRICS_IDENTITY,
    Job,
    load_jobs,
    shared_test_questions,
    show,
    stage_times,
    unfinished_jobs,
)
from ifexp.report.render import delta_text, estimate_text, legend, per_seed_text, table
from ifexp.report.rows import (
    FLAW_MEASURES,
    Summary,
    across_estimates,
    find_row,
    parse_across,
    reference_section,
    summarise,
    versus_estimates,
)
from ifexp.schema import IfexpError


def write_report(
    root: Path,
    versus: list[str] | tuple[str, ...] = (),
    across: list[str] | tuple[str, ...] = (),
    wandb: str = "auto",
) -> Path:
    """report.md (and figures) for the jobs under root; `versus`: rows (a strategy, or a row's label)
    every other row is also compared with, paired per problem and seed, beside the Δ vs Random;
    `across`: `KEY=VALUE` settings every other section's rows are compared with, row by row;
    `wandb`: the report's W&B run (ifexp.report.wandb_run: auto, offline, online or none)."""
    from ifexp.report.charts import report_figures
    from ifexp.report.wandb_run import log_report, logger_config

    jobs = load_jobs(root)
    if not jobs:
        raise IfexpError(f"no job {METRICS} (with a strategy) under {root}")
    summary = summarise(jobs, root)
    references = [parse_across(text, summary.section_keys) for text in across]
    lines = introduction(root, jobs, summary) + not_read(root, summary) + shared_draws(root, jobs)
    sections = list(dict.fromkeys(row["cell"].section for row in summary.rows))
    for section in sections:
        lines += section_lines(root, summary, section, sections, versus, references)
    lines += compute_lines(jobs)
    figures = report_figures(root, summary)
    lines += figure_lines(figures)
    lines += jobs_lines(summary)
    report = root / "report.md"
    report.write_text("\n".join(lines) + "\n")
    wandb_cfg = logger_config(root, jobs, wandb)
    if wandb_cfg is not None:
        folder = log_report(root, summary, {f.file: root / f.file for f in figures}, wandb_cfg)
        where = folder.relative_to(root) if folder and folder.is_relative_to(root) else folder
        note = f"`wandb sync {where}` uploads it" if wandb_cfg.mode == "offline" else "logged online"
        lines += ["", f"W&B: this report's run (job_type `report`, beside the jobs' runs) is `{where}`; {note}."]
        report.write_text("\n".join(lines) + "\n")
    return report


def settings_text(section_keys: list[str], section: tuple) -> str:
    """A section's settings, `key=value, ...` (empty where all jobs are one section)."""
    return ", ".join(f"{k}={show(v)}" for k, v in zip(section_keys, section, strict=True))


def rows_in(summary: Summary, section: tuple) -> list[dict[str, Any]]:
    return [row for row in summary.rows if row["cell"].section == section]


def introduction(root: Path, jobs: list[Job], summary: Summary) -> list[str]:
    """The title, which jobs were read and how they were grouped, and what Δ and its brackets are."""
    differing = summary.section_keys + ["pruning.strategy"] + summary.row_keys
    kinds = {e.interval for row in summary.rows for kind in ("pass", "delta") for e in row[kind].values()}
    brackets = {
        frozenset({"t"}): "`[a, b]` is a 95% t-interval over replicates, ",
        frozenset({"bootstrap"}): "`[a, b]` is a 95% bootstrap interval, ",
        frozenset({"t", "bootstrap"}): "`[a, b]` is a 95% interval (a t-interval over replicates or a bootstrap), ",
    }.get(frozenset(kinds & {"t", "bootstrap"}), "")
    excluded_text = ", ".join(f"`{e}*`" if e.endswith(".") else f"`{e}`" for e in EXCLUDED_FROM_GROUPING)
    # what every job shares, of what describes it (the strategy and the seed make rows)
    common = {
        name: jobs[0].metrics.get(name)
        for name in DESCRIPTION_KEYS
        if name not in (STRATEGY_KEY, SEED_KEY)
        and name in jobs[0].metrics
        and len({json.dumps(job.metrics.get(name)) for job in jobs}) == 1
    }
    return [
        f"# ifexp report: {root.name}",
        "",
        f"{len(jobs)} jobs read from `{root}`"
        + (f" ({', '.join(f'{k}={v}' for k, v in common.items())} in all)" if common else "")
        + ". One row per configuration: jobs are grouped by every value of their resolved config "
        f"(`{HYDRA_DIR}/{SAVED_CONFIG}`) that differs between them (here: {', '.join(f'`{k}`' for k in differing)}), "
        f"except {excluded_text}, which cannot change a result or, for the seed, are what a row pools over; "
        "two jobs with the same configuration and seed are refused, not averaged.",
        "",
        "Δ = pass@1(strategy) − pass@1(Random pruning of the same size and seed, trained and evaluated in the "
        "same job), paired per benchmark problem and seed: d = mean(correct, strategy) − mean(correct, Random) "
        "over the problem's samples; mean Δ is the mean of d over problems × seeds. "
        + brackets
        + "`(min–max a, b)` is only the range of the per-seed values (not a confidence interval); what each "
        "bracket is over, and the test behind p, is listed under each table. "
        "The per-seed values are in the last table of each section.",
        "",
    ]


def not_read(root: Path, summary: Summary) -> list[str]:
    """Job folders without results, and jobs grouped without their config: a row pooled over fewer
    seeds than were launched, or over jobs told apart by their metrics only, must say so."""
    lines = []
    unfinished = unfinished_jobs(root)
    if unfinished:
        lines += [
            f"**Not read: {len(unfinished)} job folders have no {METRICS}** (crashed, killed or still running; "
            f"see each `{RUN_LOG}`): {', '.join(f'`{name}`' for name in unfinished)}.",
            "",
        ]
    if summary.n_without_config:
        lines += [
            f"{summary.n_without_config} jobs have no `{HYDRA_DIR}/{SAVED_CONFIG}`: they are grouped by their metrics' "
            f"{', '.join(METRICS_IDENTITY)} only.",
            "",
        ]
    return lines


def shared_draws(root: Path, jobs: list[Job]) -> list[str]:
    """Replicates that are not fresh draws of the data: their intervals over replicates must not
    read as if they were."""
    pairs = shared_test_questions(root, jobs)
    if not pairs:
        return []
    listed = "; ".join(f"`{a}` and `{b}` share {shared} of {smaller}" for a, b, shared, smaller in pairs)
    return [
        f"**Replicates that share their test questions: {listed}.** A replicate is meant to redraw the data; "
        "where two share most of their in-domain test problems, an interval over replicates holds less of the "
        "data's variance than its label says (read it as over θ*'s seed, the selections and the training runs).",
        "",
    ]


def section_lines(
    root: Path,
    summary: Summary,
    section: tuple,
    sections: list[tuple],
    versus: list[str] | tuple[str, ...],
    references: list[tuple[str, str]],
) -> list[str]:
    """One section (jobs of the same settings): its tables, each followed by its legend."""
    benchmarks, in_section = summary.benchmarks, rows_in(summary, section)
    title = settings_text(summary.section_keys, section) or "all jobs"
    lines = [f"## {title}", "", "### pass@1", ""]
    lines += table(in_section, benchmarks, "pass", lambda e: estimate_text(e, signed=False), with_seeds=True)
    lines += ["", *legend(benchmarks, in_section, "pass", "pass@1")]
    lines += delta_lines(in_section, benchmarks)
    for name in versus:
        lines += versus_lines(root, in_section, name, benchmarks)
    for key, value in references:
        lines += across_lines(root, summary, section, sections, key, value)
    lines += flaw_lines(in_section)
    lines.append("")
    return lines


def delta_lines(in_section: list[dict[str, Any]], benchmarks: list[str]) -> list[str]:
    """Δ vs Random of the section's rows (but Random's), and the same per seed."""
    with_delta = [row for row in in_section if row["delta"]]
    if not with_delta:
        return []
    seeds_here = sorted({s for row in with_delta for s in row["seeds"]})
    seeds_text = ("seed " if len(seeds_here) == 1 else "seeds ") + ", ".join(map(str, seeds_here))
    return [
        "",
        "### Δ pass@1 vs Random (paired per problem and seed)",
        "",
        *table(with_delta, benchmarks, "delta", delta_text),
        "",
        *legend(benchmarks, with_delta, "delta", "Δ"),
        "",
        f"### Δ per seed ({seeds_text}; wins: seeds with Δ > 0 / Δ < 0 / all; "
        "p over seeds: exact sign-flip test over the per-seed Δ, smallest possible 2/2^n)",
        "",
        *table(with_delta, benchmarks, "delta", per_seed_text),
    ]


def versus_lines(root: Path, in_section: list[dict[str, Any]], name: str, benchmarks: list[str]) -> list[str]:
    """--versus NAME: every other row of the section against NAME's row."""
    baseline = find_row(in_section, name)
    if baseline is None:
        return ["", f"No row `{name}` in this section to compare with (--versus {name})."]
    compared = versus_estimates(root, in_section, baseline, benchmarks)
    title = f"Δ pass@1 vs {baseline['cell'].label} (paired per problem and seed)"
    if not compared:
        return ["", f"### {title}", "", "No row has per-problem generations on a seed both rows have."]
    return [
        "",
        f"### {title}",
        "",
        f"Δ = pass@1(row) − pass@1({baseline['cell'].label}'s model of the same seed), each model from "
        "its own job, on the same problems.",
        "",
        *table(compared, benchmarks, "versus", delta_text),
        "",
        *legend(benchmarks, compared, "versus", "Δ"),
        "",
        "Per seed:",
        "",
        *table(compared, benchmarks, "versus", per_seed_text),
    ]


def across_lines(
    root: Path, summary: Summary, section: tuple, sections: list[tuple], key: str, value: str
) -> list[str]:
    """--across KEY=VALUE: every row of the section against the same row where KEY=VALUE (nothing in
    that section itself)."""
    position = summary.section_keys.index(key)
    if show(section[position]) == value:
        return []
    other = reference_section(section, sections, position, value)
    if other is None:
        return ["", f"No section with {key}={value} and the other settings of this one (--across)."]
    benchmarks = summary.benchmarks
    compared = across_estimates(root, rows_in(summary, section), rows_in(summary, other), benchmarks)
    lines = [
        "",
        f"### Against {key}={value} (the same row there, paired per problem and seed)",
        "",
        f"Δ pass@1 = pass@1(row here) − pass@1(the same row with {key}={value}), each model from its own job, "
        f"on the same problems and seeds; ΔΔ = its Δ vs Random here − its Δ vs Random there.",
        "",
    ]
    if not compared:
        return lines + ["No row has per-problem generations on a seed both sections have."]
    lines += table(compared, benchmarks, "pass", delta_text)
    lines += ["", *legend(benchmarks, compared, "pass", "Δ pass@1")]
    with_delta = [row for row in compared if row["delta"]]
    if with_delta:
        lines += ["", "ΔΔ (Δ vs Random here − there):", ""]
        lines += table(with_delta, benchmarks, "delta", delta_text)
        lines += ["", *legend(benchmarks, with_delta, "delta", "ΔΔ")]
    lines += ["", "Δ pass@1 per seed:", "", *table(compared, benchmarks, "pass", per_seed_text)]
    return lines


def flaw_lines(in_section: list[dict[str, Any]]) -> list[str]:
    """How well each row's removal found the flawed training examples, mean over seeds."""
    with_flaws = [row for row in in_section if row["flaw"]]
    if not with_flaws:
        return []
    shown = [m for m in FLAW_MEASURES if any(m in row["flaw"] for row in with_flaws)]
    lines = [
        "",
        "### Finding the flawed training examples (mean over seeds)",
        "",
        "Precision and recall of the removed set; AUROC of the removal ranking and its precision at the "
        "flawed count (the first |flawed| examples it ranks), in all and per flaw family against the clean "
        "examples: answer-visible flaws (the trace's final answer is wrong or missing: an answer check "
        "sees them) and answer-preserving ones (it does not).",
        "",
        "| strategy | " + " | ".join(FLAW_MEASURES[m] for m in shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for row in with_flaws:
        cells_text = [f"{row['flaw'][m]:.3f}" if m in row["flaw"] else "" for m in shown]
        lines.append(f"| {row['cell'].label} | " + " | ".join(cells_text) + " |")
    return lines


def compute_lines(jobs: list[Job]) -> list[str]:
    """The build time of every cached artifact the jobs used, per stage."""
    times = stage_times(jobs)
    if not times:
        return []
    return [
        "## Compute per stage",
        "",
        "Build time of every cached artifact these jobs used, each counted once (from the cache manifests).",
        "",
        "| stage | artifacts | total (s) | slowest (s) |",
        "|---|---|---|---|",
        *(f"| {stage} | {n} | {total:.0f} | {worst:.0f} |" for stage, (n, total, worst) in sorted(times.items())),
        "",
    ]


def figure_lines(figures: list) -> list[str]:
    """The figures drawn (ifexp.report.charts.Figure), each with its caption: what it shows and what
    its whiskers, bands and curves are over."""
    lines = []
    for figure in figures:
        lines += [f"![{figure.title}]({figure.file})", "", f"*Figure: {figure.title}.* " + figure.caption[0]]
        lines += ["", *figure.caption[1:], ""] if len(figure.caption) > 1 else [""]
    return ["## Figures", "", *lines] if lines else []


def jobs_lines(summary: Summary) -> list[str]:
    """Every job read, with the row (and section) it is in."""
    lines = ["## Jobs", "", "| dir | row | seed |", "|---|---|---|"]
    for row in summary.rows:
        cell = row["cell"]
        section = settings_text(summary.section_keys, cell.section)
        name = cell.label + (f"; {section}" if section else "")
        lines += [f"| {job.dir} | {name} | {job.seed} |" for job in cell.jobs]
    return lines
