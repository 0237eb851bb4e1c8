"""Jobs sharing one cache: one builder per artifact, partial artifacts never visible, and a
lock held by a killed job recovered."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

from ifexp.cache import cached_stage, content_hash

KEY = {"shared": True}


def _slow_builder(cache_dir: str, log_path: str, seconds: float = 1.0) -> None:
    def build(out: Path):
        with open(log_path, "a") as log:
            log.write(f"built by {os.getpid()}\n")
        (out / "half").write_text("partial")
        time.sleep(seconds)
        (out / "done").write_text("ok")

    cached_stage(cache_dir, "stage", KEY, build)


def test_parallel_jobs_build_a_shared_artifact_once(tmp_path):
    log_path = tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_slow_builder, args=(str(tmp_path), str(log_path))) for _ in range(3)]
    for worker in workers:
        worker.start()
    final = tmp_path / "stage" / content_hash(KEY)
    while not log_path.exists():
        time.sleep(0.05)
    assert not final.exists(), "a partial artifact is visible while it is being built"
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert log_path.read_text().count("built") == 1
    assert (final / "done").read_text() == "ok"


def test_a_lock_held_by_a_killed_job_is_recovered(tmp_path):
    log_path = tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")
    doomed = context.Process(target=_slow_builder, args=(str(tmp_path), str(log_path), 600.0))
    doomed.start()
    while not log_path.exists():  # it holds the lock and is half-way through its build
        time.sleep(0.05)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(10)
    stage = tmp_path / "stage"
    assert list(stage.glob(".tmp-*")) and not (stage / content_hash(KEY)).exists()

    started = time.time()
    _slow_builder(str(tmp_path), str(log_path), 0.0)  # would block forever on a stale lock
    assert time.time() - started < 30
    assert (stage / content_hash(KEY) / "done").read_text() == "ok"
    assert not list(stage.glob(".tmp-*")), "the killed job's temp folder was not removed"
    assert log_path.read_text().count("built") == 2
