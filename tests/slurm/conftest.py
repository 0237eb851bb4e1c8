"""A one-node Slurm cluster for the `slurm` tests, started once per session by scripts/local_slurm.sh.

The script installs Slurm, munge, slurmdbd and MariaDB from Debian's packages where they are
missing (root only) and starts the daemons under a temp folder. Where that is impossible (not
root, no apt-get, no package registry) every test here is skipped with the script's reason; any
other failure to start is an error. A cluster this fixture started is stopped at the end of the
session; one that was already running (`scripts/local_slurm.sh start` by hand) is left running.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local_slurm.sh"
CANNOT_INSTALL = 4  # local_slurm.sh's exit status when Slurm is missing and cannot be installed


class Cluster:
    def __init__(self, conf: str, partition: str):
        self.conf, self.partition = conf, partition

    def run(self, *command: str, check: bool = True) -> str:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed: {result.stderr}")
        return result.stdout

    def sacct(self, job_id: str, *, duplicates: bool = False) -> list[dict[str, str]]:
        """Every record (job and steps) of job_id; with duplicates, the attempts before a requeue too."""
        fields = "JobID,JobName,NTasks,State,Partition"
        out = self.run("sacct", "-P", "-n", *(["-D"] if duplicates else []), "-j", job_id, f"--format={fields}")
        return [dict(zip(fields.split(","), line.split("|"), strict=True)) for line in out.splitlines() if line]

    def job_state(self, job_id: str) -> str:
        records = [r for r in self.sacct(job_id) if "." not in r["JobID"]]
        return records[0]["State"] if records else "UNKNOWN"

    def wait_accounted(self, job_id: str, timeout: float = 30) -> list[dict[str, str]]:
        """sacct's records once the job and all its steps are recorded as ended (slurmdbd lags a little)."""
        deadline = time.time() + timeout
        while True:
            records = self.sacct(job_id)
            if records and all(r["State"] not in ("RUNNING", "PENDING", "COMPLETING", "REQUEUED") for r in records):
                return records
            if time.time() > deadline:
                return records
            time.sleep(1)


@pytest.fixture(scope="session")
def slurm_cluster() -> Cluster:
    was_running = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    started = time.time()
    result = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode == CANNOT_INSTALL:
        pytest.skip(result.stderr.strip().splitlines()[-1].removeprefix("local_slurm: "))
    if result.returncode != 0:
        pytest.fail(f"scripts/local_slurm.sh start failed:\n{result.stdout}{result.stderr}")
    print(f"\nlocal Slurm cluster up in {time.time() - started:.0f}s: {result.stderr.strip().splitlines()[-1]}")
    conf = result.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # sbatch, sacct, ... here; sbatch passes it on to the jobs
    partition = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True).stdout.split()
    yield Cluster(conf, partition[0])
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if not was_running:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True)
