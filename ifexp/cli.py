"""`ifexp`: the Hydra entry point (`ifexp -m ...` for multirun).

The only module that touches Hydra. A user error (IfexpError, a config that does not compose,
an OmegaConf type error) is one line on stderr and a non-zero exit. An unexpected error inside a
job leaves its full traceback in the job's run.log and one line on stderr that names it and
points there; `HYDRA_FULL_ERROR=1` also prints the traceback. A failed job of a multirun does not
stop the sweep: Hydra runs the others, then exits with the first failure.

Keep the imports light: `ifexp --help` must not pay for torch (the pipeline is imported by the job).
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import traceback
from collections.abc import Sequence
from pathlib import Path

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ifexp.outputs import HYDRA_CONFIG, OVERRIDES, RUN_LOG, SAVED_CONFIG
from ifexp.schema import IfexpError, JobConfig

log = logging.getLogger("ifexp")
ConfigStore.instance().store(name="job_schema", node=JobConfig)


class JobCrashed(Exception):
    """An unexpected error inside a job, as one line (its traceback is in the job's run.log).

    Raised in place of the original in a multirun, so that Hydra's closing report of the first
    failure (possibly pickled back from another process by a launcher) is that line."""


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


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _is_user_error(error: BaseException) -> bool:
    return isinstance(error, IfexpError | JobCrashed | HydraException | OmegaConfBaseException)


def _report_in_one_line(func):
    """Hydra's reporter for errors raised outside the task function, in one line.

    Hydra composes the config and re-raises a multirun's first failed job inside
    `hydra._internal.utils.run_and_report`, which prints a message of several lines plus a hint
    about HYDRA_FULL_ERROR and exits; no public hook changes that, and those errors never
    reach the task function or main(). `_run_hydra` looks the name up at call time, so
    replacing it changes only how these errors read (hydra-core is pinned to 1.3.8)."""
    try:
        return func()
    except Exception as error:
        if _full_error():
            raise
        hint = "" if _is_user_error(error) else f" ({type(error).__name__}; HYDRA_FULL_ERROR=1 shows the traceback)"
        print(f"ifexp: error: {one_line(error)}{hint}", file=sys.stderr)
        sys.exit(2)


assert callable(getattr(hydra_utils, "run_and_report", None)), "hydra-core changed: see _report_in_one_line"
hydra_utils.run_and_report = _report_in_one_line


def _to_job_config(cfg: DictConfig) -> JobConfig:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def compose_job(overrides: Sequence[str] = (), check: bool = True) -> JobConfig:
    """The JobConfig that `ifexp OVERRIDES` runs, composed from conf/ (and sweeps/: `sweeps=NAME`
    gives its fixed values; its sweeper params are not expanded) and, with `check`, validated.

    The one way benchmarks, scripts and tests build a job; it must not be called inside a running
    Hydra app (Hydra is initialised once per process)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        job = _to_job_config(compose(config_name="config", overrides=list(overrides)))
    if check:
        from ifexp.plugins import load_plugins
        from ifexp.validation import validate

        load_plugins(job.plugins)
        validate(job)
    return job


# The config tree lives beside the package (editable install); Hydra would resolve a relative
# path as a Python package name, so give it the absolute folder.
REPO_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = str(REPO_DIR / "conf")
SWEEPS_DIR = REPO_DIR / "sweeps"


class FolderAsGroup(ConfigSource):
    """One folder as the one config group of its name, and nothing else: `ifexp sweeps=cpu_demo`.

    The top-level sweeps/ folder sits beside conf/, not in it (DESIGN layout). A `file://` entry
    for the repository root would make every folder there (.venv, .git, outputs) a config group
    that `ifexp --help` walks file by file; this source answers for `sweeps/...` only."""

    @staticmethod
    def scheme() -> str:
        return "ifexp-group"

    def _local(self, config_path: str) -> str | None:
        """The file or folder behind a config path inside the group; None outside it."""
        group, _, rest = config_path.partition("/")
        return os.path.join(self.path, rest) if group == os.path.basename(self.path) else None

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        local = self._local(config_path)
        return config_path == "" or (local is not None and os.path.isdir(local))

    def is_config(self, config_path: str) -> bool:
        local = self._local(self._normalize_file_name(config_path))
        return local is not None and os.path.isfile(local)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path == "":
            wanted = results_filter in (None, ObjectType.GROUP) and self.available()
            return [os.path.basename(self.path)] if wanted else []
        local = self._local(config_path)
        if local is None or not os.path.isdir(local):
            return []
        files: list[str] = []
        for name in os.listdir(local):
            self._list_add_result(files, f"{config_path}/{name}", name, results_filter)
        return sorted(set(files))

    def load_config(self, config_path: str) -> ConfigResult:
        local = self._local(self._normalize_file_name(config_path))
        if local is None or not os.path.isfile(local):
            raise ConfigLoadError(f"Config not found : {config_path}")
        with open(local, encoding="utf-8") as handle:
            header = ConfigSource._get_header_dict(handle.read(512))
            handle.seek(0)
            config = OmegaConf.load(handle)
        return ConfigResult(config=config, path=self.full_path(), provider=self.provider, header=header)


class SweepsSearchPath(SearchPathPlugin):
    """Puts the top-level sweeps/ folder on Hydra's search path as the group `sweeps`, and the
    `conf/` folder of each installed plugin package (ifexp.plugins) after conf/."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from ifexp.plugins import installed_plugin_conf_dirs

        search_path.append(provider="ifexp-sweeps", path=f"{FolderAsGroup.scheme()}://{SWEEPS_DIR}")
        for folder in installed_plugin_conf_dirs():
            search_path.append(provider=f"ifexp-plugin:{folder.parent.name}", path=f"file://{folder}")


Plugins.instance().register(FolderAsGroup)
Plugins.instance().register(SweepsSearchPath)


class KeepEarlierSweepConfigs(Callback):
    """hydra.callbacks (conf/config.yaml): a multirun into a folder that holds an earlier sweep
    keeps that sweep's multirun.yaml as multirun.N.yaml (Hydra writes its own over it)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        from ifexp.job_identity import keep_earlier_sweep_config

        kept = keep_earlier_sweep_config(config.hydra.sweep.dir)
        if kept is not None:
            message = f"{kept.parent} holds an earlier sweep: its multirun.yaml is kept as {kept.name}"
            print(f"ifexp: {message}", file=sys.stderr)


def _append_to_run_log(run_dir: Path, text: str) -> Path:
    """Appends to the job's log (hydra.job_logging's file handler writes <run dir>/run.log)."""
    run_log = run_dir / RUN_LOG
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_log.open("a") as handle:
        handle.write(text.rstrip("\n") + "\n")
    return run_log


def _where(error: BaseException) -> str:
    """The innermost frame of the project's code the error passed through: ifexp's own, or any
    file that is neither the standard library nor an installed package (else the innermost)."""
    frames = traceback.extract_tb(error.__traceback__)
    libraries = {
        path for key, path in sysconfig.get_paths().items() if key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    ours = [f for f in frames if f.filename.startswith(package) or not f.filename.startswith(("<", *libraries))]
    candidates = ours or frames
    if not candidates:
        return ""
    frame = candidates[-1]
    path = os.path.relpath(frame.filename, REPO_DIR) if frame.filename.startswith(str(REPO_DIR)) else frame.filename
    return f"{frame.name} ({path}:{frame.lineno})"


def _crash_line(error: BaseException, run_log: Path) -> str:
    where = _where(error)
    failed = f"job failed in {where}" if where else "job failed"
    return f"{failed}: {type(error).__name__}: {one_line(error)}; traceback in {run_log}"


def _hydra_files(cfg: DictConfig, hydra_cfg: DictConfig) -> dict[str, str]:
    """What Hydra writes into <run dir>/.hydra/ when hydra.output_subdir is set, as ifexp writes
    it instead (conf/config.yaml sets it to null): after the run dir is checked, so that a job
    refused there leaves the finished job's .hydra/ as it was (ifexp.job_identity)."""
    return {
        SAVED_CONFIG: OmegaConf.to_yaml(cfg),
        HYDRA_CONFIG: OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
        OVERRIDES: OmegaConf.to_yaml(hydra_cfg.overrides.task),
    }


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _job(cfg: DictConfig) -> float | None:
    from ifexp import outputs
    from ifexp.job_identity import claim_run_dir
    from ifexp.pipeline import run_job
    from ifexp.plugins import load_plugins
    from ifexp.tracking import Tracker
    from ifexp.validation import validate

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # W&B group = the sweep (its folder name), so one sweep's jobs sit together
    group = Path(hydra_cfg.sweep.dir).name if multirun else None
    tracker = None
    try:
        job = _to_job_config(cfg)
        # in the job's own process (a submitit launcher runs each job in one): before validation,
        # which asks the registries the plugins register in
        load_plugins(job.plugins)
        validate(job)
        digest = claim_run_dir(run_dir, OmegaConf.to_container(cfg, resolve=False), _hydra_files(cfg, hydra_cfg))
        config = OmegaConf.to_container(cfg, resolve=True)
        # W&B: the sweep's runs side by side (group), told apart by strategy (job_type)
        tracker = Tracker(job.logger, run_dir, config, run_dir.name, group, job_type=job.pruning.strategy)
        metrics = run_job(job, run_dir, tracker, config_digest=digest)
    except (IfexpError, OmegaConfBaseException) as error:
        # user errors (an OmegaConf one: a missing mandatory value, say): one line, no traceback
        message = str(error) if isinstance(error, IfexpError) else one_line(error)
        _append_to_run_log(run_dir, f"ERROR {message}")
        if _full_error():
            raise
        print(f"ifexp: error: {message}", file=sys.stderr)
        if multirun:
            # Hydra records the failure and runs the sweep's other jobs, then exits with the
            # first failure (as one line, through _report_in_one_line).
            raise
        sys.exit(1)
    except Exception as error:
        run_log = _append_to_run_log(run_dir, f"ERROR job failed\n{traceback.format_exc()}")
        if _full_error():
            raise
        message = _crash_line(error, run_log)
        print(f"ifexp: error: {message}", file=sys.stderr)
        if multirun:
            raise JobCrashed(message) from None
        sys.exit(1)
    finally:
        if tracker is not None:
            tracker.finish()
    log.info("run directory: %s", run_dir)
    # what a Hydra sweeper would optimise: the first benchmark's pass@1 (the in-domain split's, if any)
    benchmarks = [job.dataset.name, *job.eval.benchmarks]
    return next((metrics[outputs.pass_key(b)] for b in benchmarks if outputs.pass_key(b) in metrics), None)


def main() -> None:
    from ifexp.plugins import LAUNCH_DIR_VARIABLE

    # where plugin modules are also looked up, in this process and in the jobs' (inherited)
    os.environ[LAUNCH_DIR_VARIABLE] = os.getcwd()
    _job()


if __name__ == "__main__":
    main()
