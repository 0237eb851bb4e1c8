"""Running a stage's work across processes (DDP): fine-tuning and feature extraction.

A job stays one process (Hydra, the cache, vLLM); a stage that shards its work calls
`run_sharded(function, kwargs, num_processes)`, which pickles the call, starts
`num_processes` workers of `python -m ifexp.distributed SPEC` and returns rank 0's result:

- launcher `torchrun`: `torch.distributed.run --standalone` on this node, one worker per GPU
  (or per CPU process, gloo);
- launcher `srun`: inside a Slurm allocation, `srun --ntasks N` starts the workers as a job
  step (sharing the job's CPUs and GPUs) and each maps SLURM_PROCID / SLURM_NTASKS /
  SLURM_LOCALID to the torch.distributed variables, so no torchrun runs inside a submitit task;
- launcher `auto` (default): srun inside a Slurm job, torchrun elsewhere.

Inside a worker, Accelerate (fine-tuning) or `shard` / `gather_rows` (features) use the process
group; with one process every helper here is a no-op, so the same code runs unsharded.
"""

from __future__ import annotations

import faulthandler
import importlib
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ifexp.child_output import PassedThrough
from ifexp.schema import CHOICES, IfexpError, expected_one_of

LAUNCHERS = CHOICES["compute.launcher"]
STDERR_KEPT = 1 << 16  # bytes of the workers' stderr a failed run copies into the job's log

log = logging.getLogger(__name__)


def local_device() -> torch.device:
    """This process's device: its GPU where CUDA is available (one per process; LOCAL_RANK is set by
    torchrun, and by `_env_from_slurm` for srun workers), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n_rows: int, batch_size: int) -> tuple[int, int]:
    """This process's contiguous [start, stop) of n_rows, cut on batch boundaries.

    Whole batches keep each example in the batch it has with one process, so padding (and
    thus the float arithmetic) matches the unsharded run.
    """
    rank, world = rank_and_world()
    n_batches = -(-n_rows // batch_size)
    per_rank = -(-n_batches // world)
    start = min(n_rows, rank * per_rank * batch_size)
    return start, min(n_rows, start + per_rank * batch_size)


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every process's rows of a (n_local, ...) array, concatenated in rank order."""
    _, world = rank_and_world()
    if world == 1:
        return local
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(local)]))
    width = int(max(s.item() for s in sizes))
    padded = torch.zeros((width, *local.shape[1:]), dtype=torch.from_numpy(local).dtype)
    padded[: len(local)] = torch.from_numpy(local)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(size.item())] for part, size in zip(parts, sizes, strict=True)]).numpy()


def sum_across(tensors: dict[str, torch.Tensor]) -> None:
    """In-place sum over processes (K-FAC statistics gathered from each shard)."""
    if rank_and_world()[1] > 1:
        for value in tensors.values():
            dist.all_reduce(value, op=dist.ReduceOp.SUM)


def run_sharded(function, kwargs: dict[str, Any], num_processes: int, launcher: str = "auto") -> Any:
    """function(**kwargs) in num_processes workers; rank 0's return value. One process: a plain call."""
    if num_processes <= 1:
        return function(**kwargs)
    if launcher not in LAUNCHERS:
        raise IfexpError(expected_one_of("compute.launcher", launcher))
    if launcher == "auto":
        launcher = "srun" if "SLURM_JOB_ID" in os.environ and shutil.which("srun") else "torchrun"
    work = Path(tempfile.mkdtemp(prefix="ifexp-dist-"))
    try:
        spec = work / "spec.pkl"
        spec.write_bytes(pickle.dumps((function.__module__, function.__qualname__, kwargs)))
        worker = [sys.executable, "-m", "ifexp.distributed", str(spec), str(work / "result.pkl")]
        if launcher == "torchrun":
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={num_processes}",
            ]
            command += worker[1:]
        else:
            if not shutil.which("srun"):
                raise IfexpError("compute.launcher=srun: srun is not on PATH (run inside a Slurm allocation)")
            # --overlap: submitit runs the job itself inside a step (srun python -m submitit...) that
            # holds all of the job's CPUs and memory; without it this step waits for them forever.
            command = ["srun", "--overlap", f"--ntasks={num_processes}", "--kill-on-bad-exit=1"]
            if "SLURM_CPUS_PER_TASK" in os.environ:  # split the job's CPUs among the workers
                command.append(f"--cpus-per-task={max(1, int(os.environ['SLURM_CPUS_PER_TASK']) // num_processes)}")
            if torch.cuda.is_available():
                command.append("--gpus-per-task=1")
            command += worker
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // num_processes))}
        returncode, stderr_tail = _run_passing_stderr_through(command, env)
        if (work / "error.txt").is_file():  # a worker's IfexpError: the user's one line
            raise IfexpError((work / "error.txt").read_text())
        if returncode != 0:
            # into the job's run.log, beside the one line: the workers' tracebacks went to stderr only
            log.error("the %d workers of %s wrote, at the end:\n%s", num_processes, function.__name__, stderr_tail)
            raise IfexpError(f"{function.__name__} failed in a {num_processes}-process run (exit {returncode})")
        return pickle.loads((work / "result.pkl").read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_passing_stderr_through(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs command with its stderr shown as it comes (progress bars); its exit code and stderr's last
    STDERR_KEPT bytes."""
    output = PassedThrough(STDERR_KEPT)
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE) as process:
        output.copy(process.stderr)
    return process.returncode, output.tail_text()


def _env_from_slurm() -> None:
    """torch.distributed's variables from srun's, where torchrun has not set them."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ.get("SLURM_STEP_NUM_TASKS", os.environ["SLURM_NTASKS"])
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        nodes = subprocess.run(
            ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True
        )
        os.environ["MASTER_ADDR"] = nodes.stdout.split()[0]
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def main(spec_path: str, result_path: str) -> None:
    # A worker that dies of a signal (SIGABRT from C++, SIGSEGV) leaves no Python traceback;
    # faulthandler prints every thread's stack to stderr, which run_sharded's caller keeps.
    faulthandler.enable(all_threads=True)
    _env_from_slurm()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend)
    try:
        module, name, kwargs = pickle.loads(Path(spec_path).read_bytes())
        try:
            result = getattr(importlib.import_module(module), name)(**kwargs)
        except IfexpError as error:
            if dist.get_rank() == 0:
                Path(result_path).with_name("error.txt").write_text(str(error))
            sys.exit(2)
        if dist.get_rank() == 0:
            Path(result_path).write_bytes(pickle.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Every rank has passed the barrier and rank 0's result is on disk; what is left is interpreter
    # teardown, where gloo's C++ threads can abort the process (a 2-process CPU fine-tune died once
    # in CI, 2026-12-06, with "terminate called without an active exception" after its last step;
    # not reproduced in 25 runs here). Skip it: flush what is buffered and leave.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
