"""Polling for something a background process makes (a file, a job state), with a deadline."""

from __future__ import annotations

import subprocess
import time


def wait_until(condition, what: str, timeout: float, process: subprocess.Popen | None = None):
    """condition()'s first truthy value, polled every 0.5 s; fails after `timeout` seconds, or as soon
    as `process` (where given) has ended."""
    deadline = time.time() + timeout
    while not (value := condition()):
        if process is not None and process.poll() is not None:
            raise AssertionError(f"ifexp ended (exit {process.returncode}) before {what}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value
