"""`ifexp-report DIR`: summarise a run or multirun directory into report.md and figures.

Reads every job under DIR (its `metrics.json`, its resolved `.hydra/config.yaml` and its
`generations/{pruned,random}_<benchmark>.jsonl`) and writes, beside them in DIR:
- report.md: one row per configuration (jobs grouped by every config value that differs
  between them except the seed and `EXCLUDED_FROM_GROUPING`; duplicates are refused), with
  pass@1 and Δ vs Random per benchmark, paired per problem and seed: mean Δ, a 95% paired
  bootstrap interval over problems × seeds, an exact sign-flip test over problems (the exact
  McNemar test with one seed and greedy answers), the per-seed values; flaw detection per
  strategy, and the compute per stage; with `--versus S`, every row's Δ against strategy S's
  model too (same pairing, on the seeds both rows have); with `--across KEY=VALUE` (sections
  that differ in a setting, e.g. train.mixed_precision), every row against the same row in the
  section where KEY=VALUE: its pass@1 and its Δ vs Random (ΔΔ), same pairing;
- the figures (ifexp.report.charts), each with a caption in report.md saying what its intervals
  are over: delta_vs_random.png (Δ bars per row and benchmark, whiskers = the paired intervals),
  pass_vs_fraction.png (with several pruning fractions: pass@1 per strategy against the fraction,
  Random as the reference), flaw_roc.png (ROC curves of each strategy's removal ranking against
  the flaw labels, from each job's removal_scores.csv);
- one W&B run (ifexp.report.wandb_run; offline by default, like the jobs': DIR/wandb/) with the
  Δ vs Random table and the figures, grouped with the sweep's job runs.

The package, in the order the report is made: `jobs` (the jobs under DIR, grouped into rows),
`stats` (paired estimates, their intervals and tests: what each is over), `rows` (each row's
estimates, --versus and --across), `render` (estimates and tables as markdown), `charts` (the
figures and their captions), `document` (report.md part by part: `write_report`, also importable
from here), `wandb_run` (the report's W&B run); here the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ifexp.report.document import write_report
from ifexp.schema import IfexpError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ifexp-report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run or multirun directory")
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="STRATEGY",
        help="also compare every row with this strategy's row (or a row label), paired per problem and seed; "
        "repeatable or comma-separated, e.g. --versus answer_check,perplexity",
    )
    parser.add_argument(
        "--across",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="compare each row with the same row in the section where KEY=VALUE (the other sections' "
        "settings equal), paired per problem and seed, e.g. --across train.mixed_precision=no",
    )
    parser.add_argument(
        "--wandb",
        choices=("auto", "offline", "online", "none"),
        default="auto",
        help="the report's W&B run (job_type report, grouped with the jobs' runs): auto (default) follows the "
        "jobs' logger (offline unless they ran online; none where no job logged to W&B)",
    )
    args = parser.parse_args(argv)
    versus = [name.strip() for names in args.versus for name in names.split(",") if name.strip()]
    if not args.dir.is_dir():
        print(f"ifexp-report: error: {args.dir}: not a directory", file=sys.stderr)
        sys.exit(2)
    try:
        print(write_report(args.dir, versus, args.across, args.wandb))
    except IfexpError as error:
        print(f"ifexp-report: error: {error}", file=sys.stderr)
        sys.exit(2)
