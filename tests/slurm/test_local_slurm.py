"""scripts/local_slurm.sh itself: a cluster started after an earlier one was killed mid-job is a new cluster.

The test runs a second cluster beside the session's (its own folder and ports; the same munged and
node name), so that killing it does not touch the cluster the other Slurm tests use.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import REPO
from helpers.waiting import wait_until

pytestmark = pytest.mark.slurm

PORT = 7817  # the session's cluster uses 6817-6820
SCRIPT = REPO / "scripts" / "local_slurm.sh"


def kill_daemons(folder: Path) -> None:
    """SIGKILL every daemon of the cluster in folder, as a lost machine would: no state saved on the way out."""
    for name in ("slurmd", "slurmctld", "slurmdbd", "mysqld"):
        pid_file = folder / f"{name}.pid"
        if pid_file.exists():
            subprocess.run(["kill", "-9", pid_file.read_text().strip()], check=False)
            pid_file.unlink()


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_cluster_killed_mid_job_comes_back_with_no_job_of_the_dead_one(slurm_cluster, tmp_path):
    folder = tmp_path / "cluster"
    env = {**os.environ, "IFEXP_SLURM_DIR": str(folder), "IFEXP_SLURM_PORT": str(PORT)}
    env["SLURM_CONF"] = str(folder / "slurm.conf")

    def script(command: str) -> None:
        result = subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"local_slurm.sh {command}:\n{result.stderr}"

    def slurm(*command: str) -> str:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True).stdout

    try:
        script("start")
        # a job that holds every CPU of the node, then the whole cluster killed under it
        job_pid = tmp_path / "job.pid"
        cpus = slurm("sinfo", "-h", "-o", "%c").split()[0]
        slurm("sbatch", "-o", "/dev/null", "-c", cpus, "--wrap", f"echo $$ > {job_pid}; exec sleep 600")
        pid = wait_until(lambda: job_pid.exists() and job_pid.read_text().strip(), "the job to start", 60)
        step_daemon = parent_pid(int(pid))
        kill_daemons(folder)
        subprocess.run(["kill", "-9", pid, str(step_daemon)], check=False)

        script("start")
        assert slurm("squeue", "-h") == "", "the new cluster holds the killed cluster's jobs"
        job = slurm("sbatch", "-o", "/dev/null", "--parsable", "-c", "1", "--wrap", "true").strip()
        wait_until(lambda: "COMPLETED" in slurm("sacct", "-n", "-X", "-j", job, "-o", "State"), f"job {job} to run", 60)
        # the accounting database is new too: job ids restart, and sacct must not answer with the old job
        assert len(slurm("sacct", "-n", "-X", "-D", "-j", job, "-o", "JobID").split()) == 1
    finally:
        script("stop")
