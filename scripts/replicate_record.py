"""The headline's per-replicate record (docs/headline_replicates.csv) and its intervals over replicates.

A replicate takes about two hours here and a session's machine, its cache and its job folders do not
outlive the session, so the five replicates never sit side by side for `ifexp-report`. Each
replicate's numbers go into this record as it finishes, with what produced them; the intervals over
replicates are computed from the record, not from numbers copied by hand.

    .venv/bin/python scripts/replicate_record.py add outputs/sweeps/next_legs_rule --code 184c5cc [--fraction 0.1]
    .venv/bin/python scripts/replicate_record.py intervals [--versus perplexity] [--sweep next_legs_rule]

`add` reads every finished job of the sweep folder at one pruning fraction (scripts/pilot_criteria.py's
`read_jobs`) and writes one row per job: Δ vs Random, the paired disagreements and SE over the test
problems, the flaw AUROC, and its provenance (the sweep folder, the code it ran from, the job's config
digest and the cache keys of both models' evaluations). `--code` is checked, not taken on trust, where
the job's cache is at hand: every module digest that its artifacts' manifests record must be that
module's at the commit (else it stops); the jobs whose cache is gone are listed as not checked.
A row already in the record for the same sweep, replicate, fraction and strategy must carry the same
numbers (else it stops: a rerun that disagrees is news, not an update) and, where the record names
them, come from the same code and config digest (the same numbers from another config are not a
rerun), and the rows of one replicate must agree on what they share: θ*'s |Q_C|, |Q_I|, and Random's
pass@1 at one fraction. Rows whose job folders were lost before this record existed were copied from
docs/results.md's tables; their `source` says so.

`intervals` prints, per sweep and fraction, each strategy's Δ vs Random per replicate, the mean and a
95% Student-t interval over the replicates it ran on (`ifexp.report.stats.t_interval`; each replicate
a fresh draw of the data, θ* and its answers, one training run per arm), and with `--versus` each
strategy's paired difference from that baseline over the replicates where both ran.
"""

from __future__ import annotations

import argparse
import csv
import functools
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

from pilot_criteria import RUN_DIR, flawed_removed, paired_vs_random, read_jobs, shared_removals  # noqa: E402

from ifexp import outputs  # noqa: E402
from ifexp.cache import MANIFEST, read_manifest  # noqa: E402
from ifexp.code_version import PACKAGE, tree_digest  # noqa: E402
from ifexp.report.stats import t_interval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "headline_replicates.csv"
KEY = ("sweep", "replicate", "fraction", "strategy")
NUMBERS = (
    "pass_at_1",
    "random_pass_at_1",
    "delta_vs_random",
    "only_strategy",
    "only_random",
    "paired_se",
    "flaw_auroc",
    "flawed_removed",
    "shared_with_random",
    "n_queries_correct",
    "n_queries_incorrect",
)
PROVENANCE = ("code", "config_digest", "pruned_eval", "random_eval", "source")
COLUMNS = (*KEY, *NUMBERS, *PROVENANCE)
# What the jobs of one replicate share, and over which rows: θ*'s graded answers in every job of the
# replicate; Random's model in every job that pruned the same fraction (Random keeps fewer at 0.5).
SHARED = {
    "random_pass_at_1": ("replicate", "fraction"),
    "n_queries_correct": ("replicate",),
    "n_queries_incorrect": ("replicate",),
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def job_row(
    sweep: str, job: dict[str, Any], random: dict[str, Any] | None, benchmark: str, code: str
) -> dict[str, str]:
    """One job as a record row (every value a string, as csv holds it)."""
    paired = paired_vs_random(job, benchmark)
    only_strategy, only_random, se = paired if paired is not None else (None, None, None)
    shared = shared_removals(job, random)
    artifacts = outputs.artifact_paths(job)
    return {
        "sweep": sweep,
        "replicate": job[outputs.REPLICATE_KEY],
        "fraction": f"{job['fraction']:g}",  # 0.1, 0.25, 0.625: never rounded into another fraction
        "strategy": job[outputs.STRATEGY_KEY],
        "pass_at_1": _cell(job[outputs.pass_key(benchmark)]),
        "random_pass_at_1": _cell(job[outputs.pass_key(benchmark, "random")]),
        "delta_vs_random": _cell(job[outputs.delta_key(benchmark)]),
        "only_strategy": _cell(only_strategy),
        "only_random": _cell(only_random),
        "paired_se": _cell(se),
        "flaw_auroc": _cell(job.get("flaw/auroc")),
        "flawed_removed": _cell(flawed_removed(job)),
        "shared_with_random": "" if shared is None else str(shared[0]),
        "n_queries_correct": _cell(job.get("queries/n_correct")),
        "n_queries_incorrect": _cell(job.get("queries/n_incorrect")),
        "code": code,
        "config_digest": job.get(outputs.DIGEST_KEY, ""),
        "pruned_eval": Path(artifacts.get(f"eval/pruned/{benchmark}", "")).name,
        "random_eval": Path(artifacts.get(f"eval/random/{benchmark}", "")).name,
        "source": f"job folder {Path(job[RUN_DIR]).name}",
    }


def read_record(path: Path) -> list[dict[str, str]]:
    """The record's rows; a missing file is an empty record, a file with other columns an error."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(COLUMNS)}")
        return list(reader)


def merge(rows: list[dict[str, str]], new: list[dict[str, str]], path: Path) -> list[dict[str, str]]:
    """`rows` with `new` added. A new row for a key already recorded must repeat its numbers and come
    from the recorded code and config digest where the record names them (it then replaces the old row,
    keeping the provenance of the latest run that produced them); the rows must agree on each SHARED
    value over the rows it names. Any disagreement stops with both values named."""
    merged = {tuple(row[k] for k in KEY): row for row in rows}
    for row in new:
        key = tuple(row[k] for k in KEY)
        old = merged.get(key)
        if old is not None:
            differ = _differences(old, row, NUMBERS)
            if differ:
                raise ValueError(f"{path}: {'/'.join(key)} disagrees with the record: {differ}")
            # Same numbers from another configuration or code are another run that agrees, not a rerun:
            # taking its provenance would say the record's job was reproduced when it was not.
            differ = _differences(old, row, ("code", "config_digest"))
            if differ:
                raise ValueError(f"{path}: {'/'.join(key)} comes from another run than the record's: {differ}")
            row = {**row, **{n: old[n] for n in NUMBERS if not row[n]}}
        merged[key] = row
    result = sorted(merged.values(), key=lambda r: (r["sweep"], r["replicate"], r["fraction"], r["strategy"]))
    for name, over in SHARED.items():
        seen: dict[tuple[str, ...], dict[str, str]] = {}
        for row in result:
            if not row[name]:
                continue
            first = seen.setdefault(tuple(row[k] for k in over), row)
            if first[name] != row[name]:
                where = ", ".join(f"{k} {row[k]}" for k in over)
                raise ValueError(
                    f"{path}: {name} of {where} is {first[name]} for {first['sweep']}/{first['strategy']} "
                    f"({first['source']}) but {row[name]} for {row['sweep']}/{row['strategy']} ({row['source']}): "
                    "not the same replicate"
                )
    return result


def _differences(old: dict[str, str], row: dict[str, str], names: tuple[str, ...]) -> str:
    """The columns among `names` where both rows hold a value and the values differ, both named; "" if none."""
    differ = [n for n in names if old[n] and row[n] and old[n] != row[n]]
    return ", ".join(f"{n} {old[n]} recorded ({old['source']}) vs {row[n]} now" for n in differ)


class CodeAtCommit:
    """ifexp's modules as they are at one commit of `repo`, each by its syntax-tree digest (the digest
    a stage's code version records: ifexp.code_version.tree_digest)."""

    def __init__(self, repo: Path, commit: str) -> None:
        self.repo, self.commit = repo, commit
        self.digests: dict[str, str | None] = {}

    @functools.cached_property
    def files(self) -> set[str]:
        """The package's files at the commit; read when first needed (a job with no manifest at hand
        needs no commit)."""
        resolved = self._git("rev-parse", "--verify", "--quiet", f"{self.commit}^{{commit}}")
        if resolved.returncode != 0:
            raise ValueError(f"--code {self.commit}: no such commit in {self.repo}")
        return set(self._git("ls-tree", "-r", "--name-only", self.commit, "--", PACKAGE).stdout.split())

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True, text=True)

    def digest(self, module: str) -> str | None:
        """The module's digest at the commit, None if the commit has no such module."""
        if module not in self.digests:
            base = module.replace(".", "/")
            path = next((f for f in (f"{base}.py", f"{base}/__init__.py") if f in self.files), None)
            self.digests[module] = None if path is None else self._digest(path)
        return self.digests[module]

    def _digest(self, path: str) -> str:
        # Through a file because tree_digest reads one: the digest must be the stages' own function,
        # and giving ifexp.code_version a text entry point would change every stage's cache key.
        source = self._git("show", f"{self.commit}:{path}").stdout
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "module.py"
            file.write_text(source, encoding="utf-8")
            return tree_digest(file)


def code_differences(job: dict[str, Any], code: CodeAtCommit) -> tuple[int, list[str]]:
    """Checks that the job ran from `code`: every module digest that the manifests of its cached
    artifacts record (their code versions) against the same module at the commit. Returns (the
    number of manifests read, each difference named); (0, []) where none is at hand (the cache is gone)."""
    read, differences = 0, []
    for name, folder in sorted(outputs.artifact_paths(job).items()):
        if not (Path(folder) / MANIFEST).is_file():
            continue
        read += 1
        recorded = read_manifest(Path(folder)).get("key", {}).get("version", {}).get("code", {})
        for module, digest in sorted(recorded.items()):
            at_commit = code.digest(module)
            if at_commit != digest:
                now = "absent" if at_commit is None else at_commit
                differences.append(f"{module} {digest} in {name}'s manifest ({folder}) vs {now} at {code.commit}")
    return read, differences


def write_record(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def add(
    sweep: Path, fraction: float, code: str, record: Path, benchmark: str, repo: Path = REPO
) -> tuple[list[dict[str, str]], list[str]]:
    """Every finished job of `sweep` at `fraction` into the record, each checked to have run from
    commit `code` of `repo` where its cache is at hand (`code_differences`; a difference stops).
    Returns the new rows and the job folders whose code could not be checked (no manifest at hand)."""
    new, unchecked = [], []
    at_commit = CodeAtCommit(repo, code)
    for jobs in read_jobs(sweep, fraction).values():
        for job in jobs.values():
            read, differences = code_differences(job, at_commit)
            if differences:
                raise ValueError(
                    f"{job[RUN_DIR]}: did not run from --code {code}: {len(differences)} module(s) differ, "
                    f"e.g. {differences[0]}"
                )
            if not read:
                unchecked.append(Path(job[RUN_DIR]).name)
            new.append(job_row(sweep.name, job, jobs.get("random"), benchmark, code))
    write_record(record, merge(read_record(record), new, record))
    return new, unchecked


def _interval(values: list[float]) -> str:
    if len(values) < 2:
        return f"no interval ({len(values)} replicate)"
    bounds = t_interval(values)
    if bounds is None:
        return f"no interval (all {len(values)} equal: no spread to scale)"
    return f"[{_signed(bounds[0])}, {_signed(bounds[1])}]"


def _signed(value: float) -> str:
    """+0.060, -0.020; a mean or difference that is 0 up to float noise (0.06 - 0.02 - 0.04) prints +0.000,
    not -0.000, which would read as a small loss."""
    return f"{round(value, 9) + 0.0:+.3f}"


def intervals(rows: list[dict[str, str]], versus: str | None) -> list[str]:
    """Markdown tables, one per sweep and fraction: Δ vs Random per replicate with its mean and t-interval
    over the replicates; with `versus`, each strategy's difference from it, paired by replicate."""
    lines = []
    groups = sorted({(row["sweep"], row["fraction"]) for row in rows})
    for sweep, fraction in groups:
        group = [row for row in rows if (row["sweep"], row["fraction"]) == (sweep, fraction)]
        replicates = sorted({row["replicate"] for row in group}, key=_seed_order)
        delta = {(row["strategy"], row["replicate"]): float(row["delta_vs_random"]) for row in group}
        strategies = sorted({row["strategy"] for row in group} - {"random"})
        names = [_short(r) for r in replicates]
        lines += [
            f"### {sweep}, p = {fraction}",
            "",
            "Δ vs Random of the same replicate; the interval is a 95% Student-t interval over the replicates "
            "the strategy ran on (each a fresh draw of the data, θ* and its answers; one training run per arm).",
            "",
            f"| strategy | {' | '.join(names)} | mean | 95% t-interval over replicates |",
            "|---" * (len(names) + 3) + "|",
        ]
        for strategy in sorted(strategies, key=lambda s: (s != "oracle", -_mean(delta, s, replicates))):
            lines.append(
                _row(strategy, {r: delta[(strategy, r)] for r in replicates if (strategy, r) in delta}, replicates)
            )
        if versus is not None and versus in strategies:
            lines += [
                "",
                f"Each strategy − {versus}, paired by replicate (Random cancels: both Δ are against the same "
                "Random model).",
                "",
                f"| strategy − {versus} | {' | '.join(names)} | mean | 95% t-interval over replicates |",
                "|---" * (len(names) + 3) + "|",
            ]
            for strategy in (s for s in strategies if s != versus):
                both = [r for r in replicates if (strategy, r) in delta and (versus, r) in delta]
                if both:
                    lines.append(
                        _row(strategy, {r: delta[(strategy, r)] - delta[(versus, r)] for r in both}, replicates)
                    )
        lines.append("")
    return lines


def _row(label: str, per_replicate: dict[str, float], replicates: list[str]) -> str:
    """A table row: the value of each replicate (— where it did not run), the mean, the t-interval."""
    cells = [_signed(per_replicate[r]) if r in per_replicate else "—" for r in replicates]
    values = list(per_replicate.values())
    return f"| {label} | {' | '.join(cells)} | {_signed(mean(values))} over {len(values)} | {_interval(values)} |"


def _mean(delta: dict[tuple[str, str], float], strategy: str, replicates: list[str]) -> float:
    return mean(delta[(strategy, r)] for r in replicates if (strategy, r) in delta)


def _seed_order(replicate: str) -> tuple[int, str]:
    seed = replicate.split(",")[0].removeprefix("data_seed=")
    return (int(seed), replicate) if seed.isdigit() else (0, replicate)


def _short(replicate: str) -> str:
    """data_seed=2,scorer_seed=2 -> replicate 2 (the headline's seeds are equal)."""
    data, _, scorer = replicate.partition(",")
    data_seed, scorer_seed = data.removeprefix("data_seed="), scorer.removeprefix("scorer_seed=")
    return f"replicate {data_seed}" if data_seed == scorer_seed else replicate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, default=RECORD, help=f"the record (default {RECORD})")
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="a sweep folder's finished jobs into the record")
    adding.add_argument("sweep", type=Path)
    adding.add_argument("--code", required=True, help="the code the jobs ran from (the snapshot's commit)")
    adding.add_argument("--fraction", type=float, default=0.25, help="only the jobs that pruned this fraction")
    adding.add_argument("--benchmark", default="leg_counting", help="the in-domain benchmark's name")
    showing = commands.add_parser("intervals", help="Δ vs Random per replicate and the t-interval over replicates")
    showing.add_argument("--versus", help="also each strategy's difference from this one, paired by replicate")
    showing.add_argument("--sweep", help="only this sweep folder's rows")
    args = parser.parse_args()
    try:
        run(args)
    except ValueError as error:  # bad input or a record that disagrees: one line, no traceback
        sys.exit(f"replicate_record: {error}")


def run(args: argparse.Namespace) -> None:
    if args.command == "add":
        new, unchecked = add(args.sweep, args.fraction, args.code, args.record, args.benchmark)
        print(f"{args.record}: {len(new)} rows from {args.sweep} at p = {args.fraction}")
        print(
            f"--code {args.code} checked against the code versions in the cached artifacts' manifests of "
            f"{len(new) - len(unchecked)} job(s)"
            + (f"; not checked (no manifest at hand): {', '.join(unchecked)}" if unchecked else "")
        )
        return
    rows = [row for row in read_record(args.record) if args.sweep in (None, row["sweep"])]
    print("\n".join(intervals(rows, args.versus)))


if __name__ == "__main__":
    main()
