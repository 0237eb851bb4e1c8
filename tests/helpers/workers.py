"""Functions for ifexp.distributed workers to run in tests (imported by module name in the worker)."""

from __future__ import annotations

import os

import torch.distributed as dist


def abort_on_rank_one() -> None:
    """Rank 1 dies of SIGABRT, as a C++ abort would kill it; rank 0 waits at the barrier."""
    if dist.get_rank() == 1:
        os.abort()
