"""Experiment tracking: one W&B run per job (job_type: its strategy) and one per report (job_type
`report`), grouped by sweep, offline by default: files under the run or sweep folder, uploaded later
with `wandb sync <folder>/wandb/offline-run-*`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ifexp.schema import LoggerConfig

log = logging.getLogger(__name__)


class Tracker:
    """A thin W&B wrapper that does nothing when logger.name=none."""

    def __init__(
        self,
        cfg: LoggerConfig,
        run_dir: Path,
        config: dict[str, Any],
        name: str,
        group: str | None,
        job_type: str | None = None,
    ):
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
            "job_type": job_type,
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

    def table(self, name: str, csv_path: Path) -> None:
        """A CSV file (scores.csv) as a W&B Table."""
        if self.run is None:
            return
        import csv

        with Path(csv_path).open(newline="") as handle:
            rows = list(csv.reader(handle))

        def cell(text: str):
            try:
                return float(text)
            except ValueError:
                return text

        self.rows_table(name, rows[0], [[cell(c) for c in row] for row in rows[1:]])

    def rows_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Rows as a W&B Table (offline: files/media/table/<name>_*.table.json in the run's folder)."""
        if self.run is None:
            return
        import wandb

        self.run.log({name: wandb.Table(columns=columns, data=rows)})

    @property
    def folder(self) -> Path | None:
        """The run's own folder (offline: <dir>/wandb/offline-run-*), while it is open."""
        return Path(self.run.dir).parent if self.run is not None else None

    def images(self, paths: dict[str, Path]) -> None:
        if self.run is None or not paths:
            return
        import wandb

        self.run.log({f"figures/{name}": wandb.Image(str(path)) for name, path in paths.items()})

    def finish(self, complete_files: bool = False) -> None:
        """Ends the run; with complete_files, also stops W&B's service process, which writes an offline
        run's files after finish() returns (so they are whole when this returns: the report's run)."""
        if self.run is not None:
            self.run.finish()
            self.run = None
            if complete_files:
                import wandb

                wandb.teardown()
