"""The jobs under a report's directory: their metrics, configs and generations, grouped into rows.

A job is a folder with a metrics.json (with a strategy); its config is its `.hydra/config.yaml`
(or, without one, the few values its metrics describe it by). Jobs are grouped by every config
value that differs between them except the seed and the values that cannot change a result
(EXCLUDED_FROM_GROUPING): the values that name a strategy and its options make rows, the rest
sections. The files and keys read are ifexp.outputs'.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ifexp.cache import MANIFEST
from ifexp.job_identity import config_digest, flatten, read_config, recorded_digests
from ifexp.outputs import (
    DESCRIPTION_KEYS,
    DIGEST_KEY,
    HYDRA_DIR,
    METRICS,
    REPLICATE_KEY,
    RUN_LOG,
    SAVED_CONFIG,
    SEED_KEY,
    STRATEGY_KEY,
    artifact_paths,
    generations_path,
)
from ifexp.schema import CANNOT_CHANGE_A_RESULT, IfexpError, PruningConfig, cannot_change_a_result
from ifexp.selection.registry import STRATEGIES, option_names

# Config values that never separate two jobs into different rows: the seed, and the data draw and
# theta*'s seed that make a replicate (DESIGN.md: the unit of evidence), are what a row pools
# over; the rest cannot change a result (ifexp.schema).
SEED_CONFIG_KEY = "seed"
REPLICATE_CONFIG_KEYS = ("dataset.data_seed", "scorer_seed")
EXCLUDED_FROM_GROUPING = (SEED_CONFIG_KEY, *REPLICATE_CONFIG_KEYS, *CANNOT_CHANGE_A_RESULT)
# Values that name a strategy and its own options (as the strategies declare them): a row within a
# section, not a section.
STRATEGY_KEYS = ("pruning.strategy", *(f"pruning.{option}" for option in option_names()))
# Shown in a row's label when not ifexp's default, even where every job has the same value: a report
# whose jobs all ran Combined with z-scores, or after answer_check, must not read as the default's.
_PRUNING_DEFAULTS = PruningConfig()
# Without .hydra/config.yaml a job is identified by these metrics only (said in the report).
METRICS_IDENTITY = {name: key for name, key in DESCRIPTION_KEYS.items() if name != SEED_KEY}
ABSENT = "<absent>"


@dataclass
class Job:
    """A finished job: its folder under the report's root ("." for the root) and its metrics.json."""

    dir: str
    strategy: str
    seed: int
    metrics: dict[str, Any]
    # its data draw and theta*'s seed (outputs.replicate_id); "" where the job did not record one
    replicate: str = ""


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


def load_jobs(root: Path) -> list[Job]:
    """Every job under root that finished (its metrics.json names a strategy), in path order."""
    jobs = []
    for path in _paths_named(root, METRICS):
        if _in_submitit(path):
            continue
        metrics = json.loads(path.read_text())
        if STRATEGY_KEY in metrics:
            folder = str(path.parent.relative_to(root)) or "."
            replicate = str(metrics.get(REPLICATE_KEY, ""))
            jobs.append(Job(folder, metrics[STRATEGY_KEY], metrics[SEED_KEY], metrics, replicate))
    return jobs


# Two replicates whose in-domain test questions overlap by more than this share of the smaller set are
# not two draws of the data (chance overlap of two draws from a large problem space is near 0)
SHARED_DRAW_THRESHOLD = 0.1


def shared_test_questions(root: Path, jobs: list[Job]) -> list[tuple[str, str, int, int]]:
    """Pairs of replicates that hold many of the same in-domain test questions: (replicate a,
    replicate b, questions shared, questions in the smaller set), from the first job of each
    replicate with the in-domain generations (the benchmark named after the dataset) and a
    `question` per record. A replicate is meant to redraw the data; an interval over replicates that
    share their test problems holds less of the data's variance than it says."""
    questions: dict[str, set[str]] = {}
    for job in jobs:
        if not job.replicate or job.replicate in questions or "dataset" not in job.metrics:
            continue
        path = generations_path(root / job.dir, "pruned", str(job.metrics["dataset"]))
        if not path.is_file():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        texts = {record["question"] for record in records if "question" in record}
        if texts:
            questions[job.replicate] = texts
    pairs = []
    names = sorted(questions)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared, smaller = len(questions[a] & questions[b]), min(len(questions[a]), len(questions[b]))
            if shared > SHARED_DRAW_THRESHOLD * smaller:
                pairs.append((a, b, shared, smaller))
    return pairs


def unfinished_jobs(root: Path) -> list[str]:
    """Job folders (a `run.log` or a `.hydra/`) without a metrics.json: crashed, killed or still running.
    The report names them, so a row pooled over fewer seeds than were launched says so."""
    folders = {path.parent for path in _paths_named(root, RUN_LOG, HYDRA_DIR)}
    return sorted(
        str(folder.relative_to(root)) or "."
        for folder in folders
        if not _in_submitit(folder) and not (folder / METRICS).is_file()
    )


def job_config(job_dir: Path, metrics: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The job's config as {dotted key: value}, and whether it came from .hydra/config.yaml.
    Refuses a job whose saved config is not the one its metrics.json records it ran with."""
    saved = read_config(job_dir)
    if saved is None:
        return {key: metrics.get(name, ABSENT) for name, key in METRICS_IDENTITY.items()}, False
    recorded = metrics.get(DIGEST_KEY)
    if recorded and recorded not in recorded_digests(saved):
        raise IfexpError(
            f"{job_dir}: {HYDRA_DIR}/{SAVED_CONFIG} (config digest {config_digest(saved)}) is not the config its "
            f"{METRICS} came from ({recorded}); this folder's results cannot be attributed"
        )
    return flatten(saved), True


def excluded(key: str) -> bool:
    """Is this config value one of EXCLUDED_FROM_GROUPING?"""
    return key in (SEED_CONFIG_KEY, *REPLICATE_CONFIG_KEYS) or cannot_change_a_result(key)


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
    jobs: list[Job]


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


def group_jobs(root: Path, jobs: list[Job]) -> tuple[list[str], list[str], list[Cell], int]:
    """Cells by every differing config value but the seed; refuses two jobs of one cell and seed.

    Returns (section keys, row keys, cells, jobs without .hydra/config.yaml).
    """
    configs, n_without = [], 0
    for job in jobs:
        config, from_hydra = job_config(root / job.dir, job.metrics)
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
    for job, config in zip(jobs, configs, strict=True):
        section = tuple(config.get(k, ABSENT) for k in section_keys)
        row = (job.strategy, *(config.get(k, ABSENT) for k in row_keys))
        extra = [
            f"{key}={show(value)}"
            for key, value in non_default_options(job.strategy, config).items()
            if key not in row_keys and key not in section_keys
        ]
        read = {f"pruning.{option}" for option in option_names(job.strategy)} if job.strategy in STRATEGIES else set()
        shown = [f"{k}={show(v)}" for k, v in zip(row_keys, row[1:], strict=True) if k in read] + extra
        every = [f"{k}={show(v)}" for k, v in zip(row_keys, row[1:], strict=True)] + extra
        label = job.strategy + (f" ({', '.join(shown)})" if shown else "")
        full_labels[(section, row)] = job.strategy + (f" ({', '.join(every)})" if every else "")
        cell = cells.setdefault((section, row), Cell(section, row, label, job.strategy, []))
        for other in cell.jobs:
            if other.seed == job.seed:
                raise IfexpError(
                    f"{other.dir} and {job.dir} have the same config and seed {job.seed}: "
                    "refusing to average duplicates (remove one, or report them separately)"
                )
        cell.jobs.append(job)
    ordered = sorted(cells.values(), key=lambda c: (tuple(map(str, c.section)), tuple(map(str, c.row))))
    shared = Counter((cell.section, cell.label) for cell in ordered)
    for cell in ordered:
        cell.jobs.sort(key=lambda j: j.seed)
        if shared[(cell.section, cell.label)] > 1:
            cell.label = full_labels[(cell.section, cell.row)]
    return section_keys, row_keys, ordered, n_without


def arm_rates(root: Path, cell: Cell, bench: str, arm: str = "pruned") -> dict[int, dict[str, Fraction]]:
    """{seed: {problem id: pass rate}} of one arm ("pruned": the strategy's model, or "random") of a
    row's jobs on one benchmark, for the seeds whose job kept its generations."""
    rates = {}
    for job in cell.jobs:
        path = generations_path(root / job.dir, arm, bench)
        if path.is_file():
            rates[job.seed] = read_pass_rates(path)
    return rates


def stage_times(jobs: list[Job]) -> dict[str, tuple[int, float, float]]:
    """Per stage: (artifacts, total, slowest) seconds it took to build each artifact the jobs used.

    Read from the cache manifests, each artifact counted once however many jobs reused it (a
    job's own `time/*` only shows what that job computed). Eval artifacts add their share of
    the engine call that generated them.
    """
    seconds: dict[str, tuple[str, float]] = {}
    for job in jobs:
        for path in artifact_paths(job.metrics).values():
            manifest = Path(path) / MANIFEST
            if path not in seconds and manifest.is_file():
                data = json.loads(manifest.read_text())
                seconds[path] = (data["stage"], float(data.get("seconds", 0)) + float(data.get("generation_s", 0)))
    per_stage: dict[str, list[float]] = defaultdict(list)
    for stage, value in seconds.values():
        per_stage[stage].append(value)
    return {stage: (len(v), float(sum(v)), float(max(v))) for stage, v in per_stage.items()}
