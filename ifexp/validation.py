"""Checks of a job's config that its types cannot express, before any work starts.

Above the registries (ifexp.registry): a value that names a registered choice (a model or
dataset source, an engine, a benchmark, a projection, a preconditioner, a strategy and its
options) is checked against the registry that holds it, the rest against schema.CHOICES. Every
problem is one line (IfexpError) naming the key and the value.
"""

from __future__ import annotations

import re

from ifexp.data import DATASET_SOURCES
from ifexp.evaluate.benchmarks import benchmark_named, is_benchmark_name
from ifexp.influence.estimator import check as check_estimator
from ifexp.influence.estimator import choices as estimator_choices
from ifexp.schema import CHOICES, SOURCE_FIELDS, IfexpError, JobConfig, ModelConfig, expected_one_of
from ifexp.selection import choices as strategy_choices
from ifexp.selection import strategy_named
from ifexp.stages.base_model import MODEL_SOURCES
from ifexp.tasks import validate_dataset

# config values that must be at least 1
POSITIVE = (
    "train.batch_size",
    "eval.n_samples",
    "eval.max_new_tokens",
    "dataset.max_new_tokens",
    "model.max_seq_len",
    "queries.n_samples",
    "queries.max_new_tokens",
    "compute.num_processes",
)


def choices() -> dict[str, tuple[str, ...]]:
    """Every config key that takes one of a list -> the values allowed now (registries included)."""
    from ifexp.evaluate.engines import ENGINES

    return {
        **CHOICES,
        "model.source": MODEL_SOURCES.names(),
        "dataset.source": DATASET_SOURCES.names(),
        "engine.name": ENGINES.names(),
        **estimator_choices(),
        **strategy_choices(),
    }


def _value(cfg: JobConfig, key: str):
    group, name = key.split(".")
    return getattr(getattr(cfg, group), name)


def validate(cfg: JobConfig) -> None:
    """Raise IfexpError (one line) for the first value of cfg that cannot run."""
    for key, allowed in choices().items():
        if _value(cfg, key) not in allowed:
            raise IfexpError(expected_one_of(key, _value(cfg, key), allowed))
    if not 0.0 <= cfg.dataset.flaw_fraction < 1.0:
        raise IfexpError(f"dataset.flaw_fraction={cfg.dataset.flaw_fraction}: must be in [0, 1)")
    if not 0.0 <= cfg.pruning.fraction < 1.0:
        raise IfexpError(f"pruning.fraction={cfg.pruning.fraction}: must be in [0, 1)")
    if not 0.0 <= cfg.pruning.alpha <= 1.0:
        raise IfexpError(f"pruning.alpha={cfg.pruning.alpha}: must be in [0, 1]")
    if cfg.estimator.query_rank < 0:
        raise IfexpError(f"estimator.query_rank={cfg.estimator.query_rank}: must be >= 0 (0 = exact)")
    check_estimator(cfg.estimator)
    validate_model(cfg.model, "model")
    if cfg.scorer is not None:
        validate_model(cfg.scorer, "scorer")
    strategy_named(cfg.pruning.strategy).check(cfg)
    validate_dataset(cfg.dataset)
    if cfg.dataset.source == "jsonl" and not cfg.dataset.path:
        raise IfexpError("dataset=jsonl needs dataset.path=FILE")
    validate_benchmarks(cfg)
    for key in POSITIVE:
        if _value(cfg, key) < 1:
            raise IfexpError(f"{key}={_value(cfg, key)}: must be >= 1")
    for group in ("eval", "queries"):
        sampling = getattr(cfg, group)
        if sampling.n_samples > 1 and sampling.temperature == 0:
            raise IfexpError(f"{group}.n_samples > 1 needs {group}.temperature > 0 (greedy samples are identical)")


def validate_model(model: ModelConfig, key: str) -> None:
    """A source's own fields (schema.SOURCE_FIELDS) are set for it, and null for the others."""
    for source, names in SOURCE_FIELDS.items():
        for name in names if source != model.source else ():
            if getattr(model, name) is not None:
                raise IfexpError(
                    f"{key}.{name} is read by source={source} only, and {key} '{model.name}' has "
                    f"source={model.source}: leave it null"
                )
    if model.source == "tiny" and model.tiny is None:
        raise IfexpError(f"{key} '{model.name}': source=tiny needs {key}.tiny (its shape: conf/model/tiny_llama.yaml)")


def validate_benchmarks(cfg: JobConfig) -> None:
    """dataset.n_test / dataset.test_path, the in-domain benchmark's name (dataset.name: every
    dataset's held-out split is evaluated under it), and eval.benchmarks."""
    data = cfg.dataset
    if data.n_test < -1:
        raise IfexpError(f"dataset.n_test={data.n_test}: must be >= 0, or -1 (auto)")
    generated = DATASET_SOURCES[data.source].generated
    if generated and data.n_test < 0:
        raise IfexpError(f"dataset.n_test=-1 (auto) is for jsonl and hub sets: {data.source} needs a number")
    if generated and data.test_path:
        raise IfexpError(f"dataset.test_path is for jsonl and hub sets: {data.source} generates its test split")
    if data.test_path and data.n_test > 0:
        raise IfexpError(
            f"dataset.n_test={data.n_test} and dataset.test_path: give one (the test file holds the test problems)"
        )
    for name in cfg.eval.benchmarks:
        if not is_benchmark_name(name):
            benchmark_named(name)  # raises the one line that lists the benchmarks
        held_out = data.n_test != 0 or data.test_path
        if held_out and name != data.name and name == data.source and benchmark_named(name).in_domain:
            raise IfexpError(
                f"eval.benchmarks lists '{name}', the task dataset.source={data.source} generates: its held-out split "
                f"is the in-domain benchmark, named dataset.name={data.name!r}"
            )
    if data.test_path or data.n_test != 0:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", data.name):
            raise IfexpError(
                f"dataset.name={data.name!r}: names the in-domain benchmark (pass@1/<name>): "
                "use letters, digits, '_', '.', '-'"
            )
        own_task = data.name == data.source and is_benchmark_name(data.name) and benchmark_named(data.name).in_domain
        if is_benchmark_name(data.name) and not own_task:
            raise IfexpError(
                f"dataset.name={data.name!r} is the name of a benchmark, and the in-domain benchmark is named after "
                "the dataset: rename the dataset (dataset.name=...)"
            )
