"""How the report writes its numbers: an estimate as text, a markdown table of rows, and the legend
that says what each table's brackets and p are over."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from ifexp.report.stats import Estimate


def number(value: float, signed: bool, digits: int = 3) -> str:
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("+0.000", "0.000").replace("-0.000", "0.000") if signed else text


def estimate_text(estimate: Estimate, signed: bool) -> str:
    """mean [95% interval], mean (min–max a, b) for a per-seed range, or the mean alone."""
    text = number(estimate.mean, signed)
    if estimate.interval in ("t", "bootstrap"):
        text += f" [{number(estimate.low, signed)}, {number(estimate.high, signed)}]"
    elif estimate.interval == "range":
        text += f" (min–max {number(estimate.low, signed)}, {number(estimate.high, signed)})"
    return text


def legend(benchmarks: list[str], rows: list[dict], kind: str, what: str) -> list[str]:
    """One line per benchmark naming what the brackets (and p) of `kind` are over."""
    lines = []
    for bench in benchmarks:
        # text -> (row label, its count of non-zero problems); the count differs per row, so it is kept
        # out of the grouped text and rows that share a test share a line
        by_basis: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        for row in rows:
            if bench in row[kind]:
                estimate = row[kind][bench]
                text = estimate.basis + (f"; p: {estimate.p_basis}" if estimate.p_basis else "")
                by_basis[text].append((row["cell"].label, estimate.n_nonzero))
        for text, members in by_basis.items():
            who = "" if len(by_basis) == 1 else f" ({', '.join(label for label, _ in members)})"
            counts = [f"{label} {n_nonzero}" for label, n_nonzero in members if n_nonzero is not None]
            if counts:
                text += f"; problems with a non-zero Δ: {', '.join(counts)}"
            lines.append(f"- {what} {bench}{who}: {text}.")
    return lines


def table(
    rows: list[dict], benchmarks: list[str], kind: str, text: Callable[[Estimate], str], with_seeds: bool = False
) -> list[str]:
    """A markdown table, one line per row: its strategy (and number of seeds), then text(estimate)
    of `kind` per benchmark, empty where the row has none."""
    columns = ["strategy", *(["seeds"] if with_seeds else []), *benchmarks]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lead = [row["cell"].label, *([str(len(row["seeds"]))] if with_seeds else [])]
        values = [text(row[kind][b]) if b in row[kind] else "" for b in benchmarks]
        lines.append(f"| {' | '.join(lead)} | " + " | ".join(values) + " |")
    return lines


def p_text(p: float, digits: int, name: str = "p") -> str:
    """p=0.040, or p<0.001 where it would round to zero: "p=0.000" reads as an impossible p of zero."""
    smallest = 10.0**-digits
    return f"{name}<{smallest:.{digits}f}" if p < smallest / 2 else f"{name}={p:.{digits}f}"


def delta_text(estimate: Estimate) -> str:
    """Δ [interval] (p=...): the Δ table's cell."""
    text = estimate_text(estimate, signed=True)
    return text if estimate.p is None else f"{text} ({p_text(estimate.p, 3)})"


def per_seed_text(estimate: Estimate) -> str:
    """The per-seed Δ, wins, their min–max and the sign-flip p over seeds: the Δ-per-seed table's cell."""
    per_seed = estimate.per_seed
    text = ", ".join(f"s{s} {number(v, True)}" for s, v in per_seed.items())
    wins = f"{sum(v > 0 for v in per_seed.values())}/{sum(v < 0 for v in per_seed.values())}/{len(per_seed)}"
    text += f" (wins {wins}"
    if len(per_seed) > 1:
        text += f"; min–max over {len(per_seed)} seeds {number(min(per_seed.values()), True)}, "
        text += f"{number(max(per_seed.values()), True)}"
    if estimate.per_replicate:
        text += f"; mean over {len(estimate.per_replicate)} replicates {number(estimate.mean, True)}"
    if estimate.p_seeds is not None:
        over = "p over replicates" if estimate.per_replicate else "p over seeds"
        text += f"; {p_text(estimate.p_seeds, 2, name=over)}"
    return text + ")"
