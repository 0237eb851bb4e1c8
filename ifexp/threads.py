"""CPU threads: one setting for the whole of a job's process.

`torch.set_num_threads` does more than set a count: it also turns MKL's dynamic threading off
(`mkl_set_dynamic(0)`) for the rest of the process, and nothing turns it back on. With dynamic
threading on (a fresh process) MKL runs a small matmul on 1 thread and a larger one on all of
them; off, it runs every matmul on all of them (MKL_VERBOSE: `Dyn:1 NThr:1` vs `Dyn:0 NThr:2`
for the same SGEMM). `ifexp.signals.one_thread` (perplexity, θ*-loss) calls it, so before this a
stage ran under one MKL setting or the other depending on whether a perplexity pass had run
earlier in its process, i.e. on what the cache held: an uninterrupted job fine-tuned the pruned
and Random models and generated their answers under `Dyn:0`, a resumed job (perplexity cached)
under `Dyn:1`. MKL's float32 results depend on the number of threads it uses (docs/reliability.md,
"Determinism"), so the two could differ in the last bits.

`pin_threads` sets the state `one_thread` restores once, at job start: every stage of every process
then runs its matmuls under the same MKL setting, whatever ran before it.
"""

from __future__ import annotations

import torch


def pin_threads() -> int:
    """Fix torch's and MKL's CPU threads for the rest of the process at torch's current count, MKL's
    dynamic threading off (as after any `torch.set_num_threads`). Call once, before any stage."""
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads
