"""`ifexp`: the Hydra entry point (`ifexp -m ...` for multirun).

The only module besides ifexp.conf_store that touches Hydra. Every user error, from config
composition or from the job, is reported as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ifexp.schema import IfexpError, JobConfig, validate

log = logging.getLogger("ifexp")
ConfigStore.instance().store(name="job_schema", node=JobConfig)


def one_line(error: BaseException) -> str:
    """An exception (and its cause) as one line: Hydra's messages span several."""
    parts = [str(error)]
    if error.__cause__ is not None and str(error.__cause__) not in parts[0]:
        parts.append(str(error.__cause__))
    text = " ".join(" ".join(parts).split())
    # Hydra/OmegaConf append search paths and type internals that do not help a user.
    for noise in (" Config search path:", " reference_type=", " object_type="):
        text = text.split(noise)[0]
    return text


def _report_in_one_line(func):
    """Replaces Hydra's error report (a message, then a hint about HYDRA_FULL_ERROR)."""
    try:
        return func()
    except Exception as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"ifexp: error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)


# Hydra exposes no hook for how composition errors are printed; its own runner looks this up
# at call time, so replacing it here changes only how errors read.
hydra_utils.run_and_report = _report_in_one_line


def _to_job_config(cfg: DictConfig) -> JobConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


# The config tree lives beside the package (editable install); Hydra would resolve a relative
# path as a Python package name, so give it the absolute folder.
REPO_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = str(REPO_DIR / "conf")


class SweepsSearchPath(SearchPathPlugin):
    """Makes the top-level sweeps/ folder a config group: `ifexp sweeps=cpu_demo`."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="ifexp-sweeps", path=f"file://{REPO_DIR}")


Plugins.instance().register(SweepsSearchPath)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _job(cfg: DictConfig) -> float | None:
    from ifexp.pipeline import run_job
    from ifexp.tracking import Tracker

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # W&B group = the sweep (its folder name), so one sweep's jobs sit together
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    tracker = None
    try:
        job = _to_job_config(cfg)
        validate(job)
        tracker = Tracker(job.logger, run_dir, OmegaConf.to_container(cfg, resolve=True), run_dir.name, group)
        metrics = run_job(job, run_dir, tracker)
    except IfexpError as error:
        with (run_dir / "run.log").open("a") as run_log:
            run_log.write(f"ERROR {error}\n")
        print(f"ifexp: error: {error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # Hydra records the failure and runs the sweep's other jobs, then exits with the
            # first failure (as one line, through _report_in_one_line).
            raise
        sys.exit(1)
    except Exception as error:
        # OmegaConf errors (a missing mandatory value, say) are user errors too.
        if type(error).__module__.startswith("omegaconf") and os.environ.get("HYDRA_FULL_ERROR") != "1":
            print(f"ifexp: error: {one_line(error)}", file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        if tracker is not None:
            tracker.finish()
    in_domain = metrics.get(f"pass@1/{job.eval.benchmarks[0]}") if job.eval.benchmarks else None
    log.info("run directory: %s", run_dir)
    return in_domain


def main() -> None:
    _job()


if __name__ == "__main__":
    main()
