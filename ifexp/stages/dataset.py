"""Stage `dataset`: the train / validation / test splits of D (flaws only ever in train), as JSONL.

Keyed by the dataset config (its file paths and names excluded: a user's file counts by the hash
of its bytes, a hub dataset by the commit its revision resolves to).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ifexp.cache import Artifact, Stage, config_slice, file_hash
from ifexp.data import DATASET_SOURCES, split_dataset, split_metrics
from ifexp.examples import Example, read_jsonl, write_jsonl
from ifexp.hub import hub_snapshot
from ifexp.schema import DatasetConfig, IfexpError

STAGE = Stage("dataset", __name__)
# Counted another way: the files by their bytes, a hub revision as its commit; answer_format only
# changes how answers are read (the eval stage keys it); max_new_tokens keys the answers through
# the query and eval configs, which default to it.
NOT_IN_KEY = ("name", "path", "val_path", "test_path", "answer_format", "hf_revision", "max_new_tokens")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Dataset:
    artifact: Artifact
    train: list[Example]
    val: list[Example]
    test: list[Example]
    # data/* metrics: what splitting did (ifexp.data.split_metrics)
    metrics: dict[str, int]


def build_dataset(cfg: DatasetConfig, cache_dir: Path) -> Dataset:
    inputs: dict[str, Any] = {"dataset": config_slice(cfg, exclude=NOT_IN_KEY)}
    if not DATASET_SOURCES[cfg.source].generated:  # a user's file is identified by its content, not its name
        inputs["files"] = {
            "path": file_hash(cfg.path) if cfg.source == "jsonl" else None,
            "val_path": cfg.val_path and file_hash(cfg.val_path),
            "test_path": cfg.test_path and file_hash(cfg.test_path),
        }
    if cfg.source == "hub":
        if not cfg.hf_id:
            raise IfexpError(f"dataset '{cfg.name}': source=hub needs dataset.hf_id")
        commit, folder = hub_snapshot(cfg.hf_id, cfg.hf_revision, "dataset", f"dataset '{cfg.name}'")
        inputs["files"]["hub_commit"] = commit
        cfg = replace(cfg, path=str(folder))  # read from the snapshot of that commit

    def build(out: Path) -> dict:
        splits, report = split_dataset(cfg)
        for split, examples in splits.items():
            write_jsonl(out / f"{split}.jsonl", examples)
        return {"sizes": {split: len(examples) for split, examples in splits.items()}, "split_report": report}

    artifact = STAGE.get(cache_dir, inputs, build)
    splits = {
        s: read_jsonl(artifact / f"{s}.jsonl") if (artifact / f"{s}.jsonl").stat().st_size else [] for s in SPLITS
    }
    return Dataset(artifact, **splits, metrics=split_metrics(cfg, artifact.manifest().get("split_report", {})))
