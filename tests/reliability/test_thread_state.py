"""A job's process runs MKL under one setting from start to end: a one-thread pass (perplexity,
θ*-loss) in the middle of it leaves MKL as it found it (ifexp.threads). Before, the first
`torch.set_num_threads` turned MKL's dynamic threading off for the rest of the process, so a
stage's matmuls ran on another number of threads after a perplexity pass than in a fresh process
(the resumed job of test_kill_resume.py vs the uninterrupted one)."""

import os
import re
import subprocess
import sys

from helpers import REPO

# What the job process does (ifexp.cli pins at job start), then the same small SGEMM before and
# after a one-thread pass; MKL_VERBOSE prints each call's settings (Dyn: dynamic threading, NThr).
SCRIPT = """
import torch
from ifexp.signals import one_thread
from ifexp.threads import pin_threads
pin_threads()
a, b = torch.ones(64, 64), torch.ones(64, 48)
a @ b
with one_thread():
    pass
a @ b
"""


def mkl_settings(script: str) -> list[str]:
    env = {**os.environ, "MKL_VERBOSE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return re.findall(r"SGEMM\(N,N,48,64,64,.*(Dyn:\d).*(NThr:\d+)", result.stdout)


def test_a_one_thread_pass_leaves_mkl_threading_as_the_job_started_with():
    before, after = mkl_settings(SCRIPT)
    assert before == after, f"MKL ran the same matmul as {before} before a one-thread pass and {after} after"
