"""A child process's output, shown on our stderr as it comes and its end kept for the error report.

The vLLM worker (`evaluate.engines.VllmServer`) and the workers of a multi-process stage
(`distributed.run_sharded`) print progress bars and, when they fail, the traceback that says why:
the bars must appear live, and the traceback must reach the error message or the job's run.log.
"""

from __future__ import annotations

import sys
from typing import IO


class PassedThrough:
    """Copies a byte stream to sys.stderr chunk by chunk (a progress bar's \\r updates included) and
    keeps its last `keep` bytes in `tail`, which stays readable while the copy runs in a thread."""

    def __init__(self, keep: int):
        self.keep = keep
        self.tail = b""

    def copy(self, stream: IO[bytes]) -> None:
        """Until the stream ends (the child closed it or exited)."""
        for chunk in iter(lambda: stream.read1(1 << 16), b""):
            if hasattr(sys.stderr, "buffer"):
                sys.stderr.buffer.write(chunk)
            else:  # a replaced stderr (some test runners) takes text only
                sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()
            self.tail = (self.tail + chunk)[-self.keep :]

    def tail_text(self) -> str:
        return self.tail.decode(errors="replace")
