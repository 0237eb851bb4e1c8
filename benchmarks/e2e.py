"""`ifexp-bench e2e`: a whole sweep from an empty cache, its wall time and each stage's build time.

    ifexp-bench e2e --sweep demo --out e2e.json      # make demo's sweep (cpu_demo: the former one)

Runs `ifexp sweeps=SWEEP` into a fresh cache under --work-dir and reads each artifact's build
time (once) from the cache manifests the jobs used (`ifexp.report.jobs.stage_times`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Benchmark, machine, option, timed


@dataclass(kw_only=True)
class E2e(Benchmark):
    """wall time of a whole sweep from an empty cache, per stage"""

    sweep: str = option("demo", help="a named sweep; the table in docs/performance.md is for cpu_demo")
    work_dir: str = option("outputs/bench/e2e", help="its sweep and cache (emptied first)")
    reuse: bool = option(False, help="keep the work dir's cache (time what is left)")
    goal_s: float = option(1800.0)
    overrides: list[str] = option(
        [], positional=True, nargs="*", help="Hydra overrides for every job, e.g. dataset.n_train=64"
    )

    def execute(self) -> dict:
        """Run the sweep and time it, in all and per stage."""
        from ifexp.report.jobs import load_jobs, stage_times

        sweep_dir, cache_dir = Path(self.work_dir) / "sweep", Path(self.work_dir) / "cache"
        if not self.reuse:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        command = [
            str(Path(sys.executable).with_name("ifexp")),
            f"sweeps={self.sweep}",
            f"paths.cache_dir={cache_dir}",
            f"hydra.sweep.dir={sweep_dir}",
            *self.overrides,
        ]
        wall_s, completed = timed(subprocess.run, command)
        jobs = load_jobs(sweep_dir)
        return {
            "sweep": self.sweep,
            "command": " ".join(command),
            "exit_code": completed.returncode,
            "n_jobs": len(jobs),
            "wall_s": round(wall_s, 1),
            "goal_s": self.goal_s,
            "meets_goal": wall_s <= self.goal_s and completed.returncode == 0,
            "stages": {
                stage: {"artifacts": n, "total_s": round(total, 1), "slowest_s": round(slowest, 1)}
                for stage, (n, total, slowest) in sorted(stage_times(jobs).items(), key=lambda item: -item[1][1])
            },
            **machine(),
        }
