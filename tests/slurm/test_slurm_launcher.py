"""ifexp on a real (one-node) Slurm cluster: hydra/launcher=slurm submits with sbatch through submitit.

- a 2-job multirun: both jobs COMPLETED in sacct, the same pass@1 and selection as Hydra's basic
  launcher on the same config;
- compute.num_processes=2: fine-tuning and features run as srun job steps of 2 tasks (sacct's step
  records), the same selection as one process;
- `scontrol requeue` while a job runs: it resumes from the cache and recomputes no finished stage;
- a plugin (a strategy in a module of the user's own, outside the package): each Slurm job imports it.

Run with `pytest -m slurm` (.ci/run does); the session fixture (conftest.py) starts the cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO
from helpers.data import EASY_TRAINING
from helpers.plugins import CHEAP_JOB, MODULE, STRATEGY, removed_as_expected, write_plugin
from helpers.waiting import wait_until

pytestmark = pytest.mark.slurm

IFEXP = [sys.executable, "-m", "ifexp.cli"]
JOB = ["experiment=smoke", *EASY_TRAINING]
TIMEOUT = 900


def slurm_launcher(cluster, cpus: int) -> list[str]:
    """The slurm preset, sized for the local node (the preset asks for 1 GPU, 8 CPUs, 64 GB)."""
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}",
        "hydra.launcher.gpus_per_node=0",
        f"hydra.launcher.cpus_per_task={cpus}",
        "hydra.launcher.mem_gb=3",
        "hydra.launcher.timeout_min=60",
    ]


def ifexp_command(*args) -> list[str]:
    return [*IFEXP, "-m", *args]


def run_ifexp(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    result = subprocess.run(ifexp_command(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if result.returncode != 0:
        raise AssertionError(f"ifexp {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def slurm_jobs(sweep: Path) -> list[str]:
    """The Slurm job ids of a sweep's jobs: submitit's .submitit/<id> folders that hold a submitted call
    (several jobs: a job array, <id>_<task>; one job: a plain job)."""
    return sorted(p.parent.name for p in (sweep / ".submitit").glob("*/*_submitted.pkl"))


def results(sweep: Path) -> dict[str, tuple[dict, dict]]:
    """strategy -> (pass@1 metrics, selection.json) for every job of a sweep."""
    out = {}
    for metrics_file in sorted(sweep.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        selection = json.loads((metrics_file.parent / "selection.json").read_text())
        out[metrics["strategy"]] = ({k: v for k, v in metrics.items() if "pass@1" in k}, selection)
    return out


def manifests(cache: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in sorted(cache.glob("*/*/manifest.json"))}


@pytest.fixture(scope="module")
def two_job_sweeps(slurm_cluster, easy_cot, tmp_path_factory):
    """pruning=random,combined through Slurm and through the basic launcher, each on its own cache."""
    root = tmp_path_factory.mktemp("two_jobs")
    common = [*JOB, f"dataset.path={easy_cot}", "pruning=random,combined"]
    started = time.time()
    run_ifexp(
        *common,
        *slurm_launcher(slurm_cluster, cpus=1),
        f"paths.cache_dir={root}/slurm_cache",
        f"hydra.sweep.dir={root}/slurm",
    )
    print(f"\n2-job multirun through Slurm: {time.time() - started:.0f}s")
    run_ifexp(*common, f"paths.cache_dir={root}/basic_cache", f"hydra.sweep.dir={root}/basic")
    return root / "slurm", root / "basic"


def test_two_job_multirun_completes_in_sacct_and_matches_the_basic_launcher(slurm_cluster, two_job_sweeps):
    slurm, basic = two_job_sweeps
    jobs = slurm_jobs(slurm)
    assert len(jobs) == 2
    for job in jobs:
        records = slurm_cluster.wait_accounted(job)
        whole = [r for r in records if "." not in r["JobID"]]
        assert [r["State"] for r in whole] == ["COMPLETED"], records
        assert whole[0]["Partition"] == slurm_cluster.partition
    # sbatch ran the job with this interpreter (the venv's), through submitit
    submission = next((slurm / ".submitit").glob("*/*_submission.sh")).read_text()
    assert f"{sys.executable} -u -m submitit.core._submit" in submission
    assert f"#SBATCH --partition={slurm_cluster.partition}" in submission
    through_slurm, through_basic = results(slurm), results(basic)
    assert sorted(through_slurm) == ["combined", "random"]
    assert through_slurm == through_basic


def test_two_processes_run_as_an_srun_step_of_two_tasks(slurm_cluster, two_job_sweeps, easy_cot, tmp_path):
    started = time.time()
    run_ifexp(
        *JOB,
        f"dataset.path={easy_cot}",
        "pruning=combined",
        "compute.num_processes=2",
        *slurm_launcher(slurm_cluster, cpus=2),
        f"paths.cache_dir={tmp_path}/cache",  # compute.* is not in the cache key: a cache of its own
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    print(f"\n2-process job through Slurm: {time.time() - started:.0f}s")
    (job,) = slurm_jobs(tmp_path / "sweep")
    records = slurm_cluster.wait_accounted(job)
    assert [r["State"] for r in records if "." not in r["JobID"]] == ["COMPLETED"], records
    # the job itself runs in step 0 (submitit's srun); sft (theta*, pruned, Random) and features
    # (training set, queries) each start a step of 2 tasks
    steps = [r for r in records if re.fullmatch(r".+\.\d+", r["JobID"])]
    two_task_steps = [r for r in steps if r["NTasks"] == "2"]
    assert len(two_task_steps) >= 4, records
    assert all(r["State"] == "COMPLETED" for r in two_task_steps), records
    one_process = results(two_job_sweeps[0])["combined"][1]  # the 2-job multirun's, one process
    two_processes = json.loads(next((tmp_path / "sweep").glob("*/selection.json")).read_text())
    assert one_process["strategy"] == two_processes["strategy"] == "combined"
    assert two_processes["removed"] == one_process["removed"]


def test_a_requeued_job_resumes_from_the_cache(slurm_cluster, easy_cot, tmp_path):
    cache, sweep = tmp_path / "cache", tmp_path / "sweep"
    args = [
        *JOB,
        f"dataset.path={easy_cot}",
        "pruning=combined",
        # enough evaluation after theta* that the first attempt cannot finish in the seconds between
        # the requeue and its SIGKILL (submitit ignores the SIGTERM; KillWait is 5 s)
        "eval.benchmarks=[basic_arithmetic,chain_sum]",
        "eval.max_examples=200",
        "eval.max_new_tokens=256",
        *slurm_launcher(slurm_cluster, cpus=2),
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={sweep}",
    ]
    log_file = tmp_path / "ifexp.out"
    with log_file.open("w") as out:
        process = subprocess.Popen(ifexp_command(*args), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        # requeue once theta* is fine-tuned (the sft manifest), while the job goes on
        wait_until(lambda: list(cache.glob("sft/*/manifest.json")), "theta*'s sft manifest", TIMEOUT, process)
        (job,) = slurm_jobs(sweep)
        assert slurm_cluster.job_state(job) == "RUNNING"
        slurm_cluster.run("scontrol", "requeue", job)
        # the first attempt's processes are gone (SIGTERM, then SIGKILL after KillWait) before we look
        wait_until(
            lambda: slurm_cluster.run("squeue", "-h", "-j", job, "-o", "%T").strip() not in ("RUNNING", "COMPLETING"),
            "the requeued job to stop",
            60,
        )
        finished = manifests(cache)
        run_log = sweep / "0" / "run.log"
        offset = run_log.stat().st_size
        # Slurm holds a requeued job back for two minutes (BeginTime); let it start now
        slurm_cluster.run("scontrol", "update", f"jobid={job}", "starttime=now")
        assert process.wait(timeout=TIMEOUT) == 0, log_file.read_text()[-5000:]
    finally:
        if process.poll() is None:
            process.kill()
            subprocess.run(["scancel", *slurm_jobs(sweep)], check=False)
    # sacct: the first attempt REQUEUED, the second COMPLETED
    deadline = time.time() + 30
    while (states := [r["State"] for r in slurm_cluster.sacct(job, duplicates=True) if "." not in r["JobID"]]) != [
        "REQUEUED",
        "COMPLETED",
    ] and time.time() < deadline:
        time.sleep(1)
    assert states == ["REQUEUED", "COMPLETED"]
    # nothing finished before the requeue was rebuilt; the rest was built after it
    after = manifests(cache)
    assert {path: after[path] for path in finished} == finished
    assert len(after) > len(finished)
    resumed = run_log.read_text()[offset:]
    computed = set(re.findall(r"(\S+): computing (\S+)", resumed))
    assert computed and not {path for _, path in computed} & {str(p.parent) for p in finished}, resumed
    for path in finished:
        assert f"{path.parent.parent.name}: reusing {path.parent}" in resumed
    assert json.loads(next(sweep.glob("*/selection.json")).read_text())["strategy"] == "combined"


def test_each_slurm_job_imports_the_plugin(slurm_cluster, tmp_path):
    """Started in the user's project folder as the console script starts (-P: the folder is not on
    sys.path by Python's rule); the jobs run in Slurm's processes, which must import the module."""
    project = tmp_path / "project"
    conf = write_plugin(project)
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-P",
        "-m",
        "ifexp.cli",
        "-m",
        f"plugins=[{MODULE}]",
        f"hydra.searchpath=[file://{conf}]",
        *CHEAP_JOB,
        f"pruning={STRATEGY},random",
        *slurm_launcher(slurm_cluster, cpus=1),
        f"paths.cache_dir={tmp_path}/cache",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    jobs = slurm_jobs(tmp_path / "sweep")
    assert len(jobs) == 2
    for job in jobs:
        assert [r["State"] for r in slurm_cluster.wait_accounted(job) if "." not in r["JobID"]] == ["COMPLETED"]
    selections = {s["strategy"]: s for _, s in results(tmp_path / "sweep").values()}
    assert sorted(selections) == sorted([STRATEGY, "random"])
    assert removed_as_expected(selections[STRATEGY])
