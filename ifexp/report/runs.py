"""The jobs under a report's directory: their metrics, configs and generations, grouped into rows.

A job is a folder with a metrics.json (with a strategy); its config is its `.hydra/config.yaml`
(or, without one, the few values its metrics name). Jobs are grouped by every config value that
differs between them except the seed and EXCLUDED_FROM_GROUPING: the values that name a strategy
and its options make rows, the rest sections.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ifexp.job_identity import CANNOT_CHANGE_A_RESULT, DIGEST_KEY, config_digest, flatten, matches, read_config
from ifexp.schema import IfexpError, PruningConfig
from ifexp.selection.registry import STRATEGIES, option_names

# Config values that never separate two jobs into different rows: the seed is the replicate a
# row pools over; the rest cannot change a result (ifexp.job_identity).
EXCLUDED_FROM_GROUPING = ("seed", *CANNOT_CHANGE_A_RESULT)
# Values that name a strategy and its own options (as the strategies declare them): a row within a
# section, not a section.
STRATEGY_KEYS = ("pruning.strategy", *(f"pruning.{option}" for option in option_names()))
# Shown in a row's label when not ifexp's default, even where every job has the same value: a report
# whose jobs all ran Combined with z-scores, or after answer_check, must not read as the default's.
_PRUNING_DEFAULTS = PruningConfig()
# Without .hydra/config.yaml a job is identified by these metrics only (said in the report).
METRICS_IDENTITY = {
    "model": "model.name",
    "scorer": "scorer.name",
    "dataset": "dataset.name",
    "estimator": "estimator.name",
    "strategy": "pruning.strategy",
    "fraction": "pruning.fraction",
}
ABSENT = "<absent>"


def _in_submitit(path: Path) -> bool:
    """Under submitit's own folder: its files about a job (pickles, logs), not a job."""
    return ".submitit" in path.parts


def _paths_named(root: Path, *names: str) -> list[Path]:
    """Every file or folder under root with one of these names, following symlinked folders: a
    root that links to job folders of other sweeps (to report them together) must not lose them
    without a word, as Path.rglob would. Each real folder is walked once (no link cycles, no job
    counted twice because two links reach it)."""
    found, walked = [], set()
    for folder, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            subdirs[:] = []
            continue
        walked.add(real)
        subdirs.sort()  # the path that names a job two links reach must not depend on listing order
        found.extend(Path(folder) / name for name in (*subdirs, *files) if name in names)
    return sorted(found)


def load_runs(root: Path) -> list[dict[str, Any]]:
    runs = []
    for path in _paths_named(root, "metrics.json"):
        if _in_submitit(path):
            continue
        metrics = json.loads(path.read_text())
        if "strategy" in metrics:
            metrics["_dir"] = str(path.parent.relative_to(root)) or "."
            runs.append(metrics)
    return runs


def unfinished_jobs(root: Path) -> list[str]:
    """Job folders (a `run.log` or a `.hydra/`) without a metrics.json: crashed, killed or still running.
    The report names them, so a row pooled over fewer seeds than were launched says so."""
    folders = {path.parent for path in _paths_named(root, "run.log", ".hydra")}
    return sorted(
        str(folder.relative_to(root)) or "."
        for folder in folders
        if not _in_submitit(folder) and not (folder / "metrics.json").is_file()
    )


def job_config(job_dir: Path, metrics: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The job's config as {dotted key: value}, and whether it came from .hydra/config.yaml.
    Refuses a job whose saved config is not the one its metrics.json records it ran with."""
    saved = read_config(job_dir)
    if saved is None:
        return {key: metrics.get(name, ABSENT) for name, key in METRICS_IDENTITY.items()}, False
    recorded = metrics.get(DIGEST_KEY)
    if recorded and config_digest(saved) != recorded:
        raise IfexpError(
            f"{job_dir}: .hydra/config.yaml (config digest {config_digest(saved)}) is not the config its "
            f"metrics.json came from ({recorded}); this folder's results cannot be attributed"
        )
    return flatten(saved), True


def excluded(key: str) -> bool:
    return matches(key, EXCLUDED_FROM_GROUPING)


def show(value: Any) -> str:
    """A config value as the report writes it."""
    return "null" if value is None else str(value)


def read_pass_rates(path: Path) -> dict[str, Fraction]:
    """{problem id: fraction of its samples graded correct} from a generations/*.jsonl file."""
    rates: dict[str, Fraction] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        correct = [bool(c) for c in record["correct"]]
        if str(record["id"]) in rates:
            raise IfexpError(f"{path}: problem {record['id']} appears twice")
        rates[str(record["id"])] = Fraction(sum(correct), len(correct)) if correct else Fraction(0)
    return rates


@dataclass
class Cell:
    """One row: the jobs (one per seed) of one configuration."""

    section: tuple
    row: tuple
    label: str
    strategy: str
    runs: list[dict[str, Any]]


def non_default_options(strategy: str, config: dict[str, Any]) -> dict[str, Any]:
    """The options a job's strategy reads (and pruning.prefilter, which every strategy obeys) whose
    value is not ifexp's default, as {dotted key: value}."""
    declared = option_names(strategy) if strategy in STRATEGIES else ()
    options = {}
    for option in (*declared, "prefilter"):
        value = config.get(f"pruning.{option}", ABSENT)
        if value is not ABSENT and value != getattr(_PRUNING_DEFAULTS, option):
            options[f"pruning.{option}"] = value
    return options


def group_runs(root: Path, runs: list[dict[str, Any]]) -> tuple[list[str], list[str], list[Cell], int]:
    """Cells by every differing config value but the seed; refuses two jobs of one cell and seed.

    Returns (section keys, row keys, cells, jobs without .hydra/config.yaml).
    """
    configs, n_without = [], 0
    for run in runs:
        config, from_hydra = job_config(root / run["_dir"], run)
        configs.append(config)
        n_without += not from_hydra
    keys = sorted(set().union(*configs))
    differing = [k for k in keys if not excluded(k) and len({json.dumps(c.get(k, ABSENT)) for c in configs}) > 1]
    section_keys = [k for k in differing if k not in STRATEGY_KEYS]
    row_keys = [k for k in differing if k in STRATEGY_KEYS and k != "pruning.strategy"]
    cells: dict[tuple, Cell] = {}
    # a row's label names the row keys its strategy reads; all of them where that would make two
    # rows of a section read the same (Random jobs of a sweep over pruning.combine, say)
    full_labels: dict[tuple, str] = {}
    for run, config in zip(runs, configs, strict=True):
        section = tuple(config.get(k, ABSENT) for k in section_keys)
        row = (run["strategy"], *(config.get(k, ABSENT) for k in row_keys))
        extra = [
            f"{key}={show(value)}"
            for key, value in non_default_options(run["strategy"], config).items()
            if key not in row_keys and key not in section_keys
        ]
        read = (
            {f"pruning.{option}" for option in option_names(run["strategy"])}
            if run["strategy"] in STRATEGIES
            else set()
        )
        shown = [f"{k}={show(v)}" for k, v in zip(row_keys, row[1:], strict=True) if k in read] + extra
        every = [f"{k}={show(v)}" for k, v in zip(row_keys, row[1:], strict=True)] + extra
        label = run["strategy"] + (f" ({', '.join(shown)})" if shown else "")
        full_labels[(section, row)] = run["strategy"] + (f" ({', '.join(every)})" if every else "")
        cell = cells.setdefault((section, row), Cell(section, row, label, run["strategy"], []))
        for other in cell.runs:
            if other["seed"] == run["seed"]:
                raise IfexpError(
                    f"{other['_dir']} and {run['_dir']} have the same config and seed {run['seed']}: "
                    "refusing to average duplicates (remove one, or report them separately)"
                )
        cell.runs.append(run)
    ordered = sorted(cells.values(), key=lambda c: (tuple(map(str, c.section)), tuple(map(str, c.row))))
    shared = Counter((cell.section, cell.label) for cell in ordered)
    for cell in ordered:
        cell.runs.sort(key=lambda r: r["seed"])
        if shared[(cell.section, cell.label)] > 1:
            cell.label = full_labels[(cell.section, cell.row)]
    return section_keys, row_keys, ordered, n_without


def arm_rates(root: Path, cell: Cell, bench: str, arm: str = "pruned") -> dict[int, dict[str, Fraction]]:
    """{seed: {problem id: pass rate}} of one arm ("pruned": the strategy's model, or "random") of a
    row's jobs on one benchmark, for the seeds whose job kept its generations."""
    rates = {}
    for run in cell.runs:
        path = root / run["_dir"] / "generations" / f"{arm}_{bench}.jsonl"
        if path.is_file():
            rates[run["seed"]] = read_pass_rates(path)
    return rates


def stage_times(runs: list[dict[str, Any]]) -> dict[str, tuple[int, float, float]]:
    """Per stage: (artifacts, total, slowest) seconds it took to build each artifact the runs used.

    Read from the cache manifests, each artifact counted once however many jobs reused it (a
    job's own `time/*` only shows what that job computed). Eval artifacts add their share of
    the engine call that generated them.
    """
    seconds: dict[str, tuple[str, float]] = {}
    for run in runs:
        for key, path in run.items():
            manifest = Path(str(path)) / "manifest.json"
            if key.startswith("artifact/") and path not in seconds and manifest.is_file():
                data = json.loads(manifest.read_text())
                seconds[path] = (data["stage"], float(data.get("seconds", 0)) + float(data.get("generation_s", 0)))
    per_stage: dict[str, list[float]] = defaultdict(list)
    for stage, value in seconds.values():
        per_stage[stage].append(value)
    return {stage: (len(v), float(sum(v)), float(max(v))) for stage, v in per_stage.items()}
