"""What the benchmarks share: the subcommand base class, config groups, timing, the theta* proxy
and its gradient features, the rows they are taken on."""

from __future__ import annotations

import platform
import resource
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from ifexp.schema import EstimatorConfig, ModelConfig, TrainConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def option(default: Any = MISSING, help: str | None = None, **argparse_settings: Any) -> Any:
    """A subcommand's field with its command-line settings (help, nargs, choices, positional=True);
    a list default is copied for each instance. A field without a default is a required option."""
    metadata = {"help": help, **argparse_settings}
    if isinstance(default, list):
        return field(default_factory=default.copy, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class Benchmark:
    """One `ifexp-bench` subcommand: its fields are its options (benchmarks.cli builds the parser
    from them), `execute()` measures and returns the JSON-ready result written to `out`."""

    out: str = option(help="the JSON result file")

    def execute(self) -> dict:
        raise NotImplementedError


def load_group(group: str, name: str, schema):
    """A config-group YAML as its dataclass (no Hydra: plain OmegaConf merge onto the schema)."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
        raise SystemExit(f"ifexp-bench: error: unknown {group} '{name}' (known: {known})")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path)))


def timed(function: Callable, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(seconds, function(*args, **kwargs))."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def median_time(function: Callable, *args: Any, repeats: int = 5, **kwargs: Any) -> float:
    """The median of `repeats` timings of function(*args, **kwargs)."""
    return float(np.median([timed(function, *args, **kwargs)[0] for _ in range(repeats)]))


def machine() -> dict:
    """What the timings were taken on."""
    return {"threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_status(field: str) -> float | None:
    """A VmXXX field of /proc/self/status in MB (None off Linux)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's peak-RSS mark (VmHWM) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as marks:
            marks.write("5")
        return True
    except OSError:
        return False


def in_own_process(target: Callable, spec: dict) -> dict:
    """target(spec, results) in a fresh process (spawned: nothing inherited, its peak its own); what
    it puts on results, or {"error": ...} when it dies first (out of memory: the kernel's kill)."""
    import multiprocessing
    import queue

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(target=target, args=(spec, results))
    worker.start()
    while True:
        try:
            result = results.get(timeout=5)
            break
        except queue.Empty:
            if not worker.is_alive():  # out of memory (the kernel's kill) or an error: recorded, not fatal
                return {"error": f"the worker died (exit code {worker.exitcode})"}
    worker.join()
    return result


def device() -> str:
    """The GPU where there is one (scripts/gpu_check.sh), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def on_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device()) for name, tensor in batch.items()}


def theta_star_proxy(base: str, model_cfg: ModelConfig, seed: int = 0):
    """The base model with a LoRA adapter whose B is random (as after training: at B = 0 every
    A-gradient is zero), so a benchmark needs no fine-tuning run."""
    from ifexp.models import load_model
    from ifexp.train import apply_lora

    torch.manual_seed(seed)
    model = apply_lora(load_model(base), model_cfg, TrainConfig())
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)
    return model.to(device())


def benchmark_rows(base: str, model_cfg: ModelConfig, n: int, seed: int = 12345) -> list[tuple[list[int], int]]:
    """(input_ids, n_prompt_tokens) of n gsm_symbolic examples (a few spare: over-long prompts drop)."""
    from ifexp.data import gsm_symbolic_examples
    from ifexp.models import load_tokenizer
    from ifexp.train import encode_examples

    encoded = encode_examples(
        load_tokenizer(base), gsm_symbolic_examples(n + n // 4 + 10, seed=seed), model_cfg, "truncate"
    )
    rows = encoded.rows()
    if len(rows) < n:
        raise SystemExit(f"ifexp-bench: error: only {len(rows)} examples fit --seq-len {model_cfg.max_seq_len}")
    return rows[:n]


def proxy_features(
    base: str, model_cfg: ModelConfig, rows: list, est: EstimatorConfig, compute_dtype: str = "float32"
) -> np.ndarray:
    """Features of rows at theta_star_proxy (module level: ifexp.distributed runs it in workers)."""
    from ifexp.influence.estimator import make_projector
    from ifexp.influence.features import extract_features
    from ifexp.models import load_tokenizer

    model = theta_star_proxy(base, model_cfg)
    pad = load_tokenizer(base).pad_token_id
    features, _ = extract_features(
        model, rows, make_projector(est, model), padded(pad), est.batch_size, compute_dtype=compute_dtype
    )
    return features


def padded(pad_id: int) -> Callable[[list], dict[str, torch.Tensor]]:
    """The collate function of rows padded with pad_id (ifexp.train.collate)."""
    from functools import partial

    from ifexp.train import collate

    return partial(collate, pad_id=pad_id)


def mean_spearman(exact: np.ndarray, approx: np.ndarray) -> float:
    """Spearman correlation of two (N, Q) score matrices, column by column, averaged over queries."""
    from ifexp.influence.lds import column_spearman

    return float(np.mean(column_spearman(exact, approx)))
