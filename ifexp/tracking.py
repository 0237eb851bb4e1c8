"""Experiment tracking: one W&B run per job, offline by default (files under the run dir)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ifexp.schema import LoggerConfig

log = logging.getLogger(__name__)


class Tracker:
    """A thin W&B wrapper that does nothing when logger.name=none."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any], name: str, group: str | None):
        self.run = None
        if cfg.name != "wandb":
            return
        # Keep W&B's own caches out of the home directory: under the run dir, like its run files.
        for variable, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_CONFIG_DIR", "config")):
            os.environ.setdefault(variable, str(run_dir / "wandb" / f".{sub}"))
        import wandb

        settings = {
            "project": cfg.project,
            "entity": cfg.entity,
            "group": cfg.group or group,
            "name": name,
            "config": config,
            "dir": str(run_dir),
        }
        try:
            self.run = wandb.init(mode=cfg.mode, **settings)
        except Exception as err:  # noqa: BLE001 - any failure to reach W&B online
            if cfg.mode != "online":
                raise
            log.warning(
                "W&B online unreachable (%s); logging offline instead: wandb sync %s later",
                str(err).splitlines()[0],
                run_dir / "wandb",
            )
            self.run = wandb.init(mode="offline", **settings)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(metrics)
            self.run.summary.update(metrics)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
