"""`ifexp-bench memory`: peak memory and time of a training step and of feature extraction, by
sequence length, with and without gradient checkpointing.

    ifexp-bench memory --model smollm2_135m --lengths 512 2048 8192 --out memory.json

Each (length, checkpointing, training step | features) configuration runs in a fresh process of its
own (multiprocessing spawn), so its peak is its own: the process loads the model (the theta* proxy:
LoRA with a random B), resets its peak-RSS mark (`5` written to /proc/self/clear_refs), runs
`--steps` steps of batch 1 and reads VmHWM from /proc/self/status (the peak resident set since the
reset, the model's weights included) and, on a GPU, torch.cuda.max_memory_allocated. The rows are
synthetic: token ids drawn at random (seeded) to exactly each length, the first `--prompt-tokens`
of them the prompt (masked from the loss), the rest the response. The first step warms up; the
seconds per example are the median of the others.

A training step is what ifexp.train.finetune runs per batch (forward without cache, the response
tokens' summed cross-entropy over their count, backward, AdamW on the LoRA weights) without
Accelerate; the features are ifexp.influence.features.extract_features with the estimator's
projection, one row a batch. Checkpointing is ifexp.checkpointing (train.gradient_checkpointing).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

import torch

from benchmarks.common import Benchmark, device, in_own_process, load_group, machine, option, read_status, reset_peak
from ifexp.schema import EstimatorConfig, ModelConfig


def synthetic_rows(length: int, n: int, prompt_tokens: int, vocab: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """n rows of exactly `length` random token ids (ids 3.. of the vocabulary: no special ones), the
    first prompt_tokens of each its prompt."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randint(3, vocab, (length,), generator=generator).tolist(), prompt_tokens) for _ in range(n)]


# the exit code of a worker that stopped itself at --rss-limit-gb
OVER_LIMIT_EXIT = 3


def watch_rss(limit_mb: float, every_s: float = 0.02) -> None:
    """Stop this process (exit code OVER_LIMIT_EXIT) when its resident set passes limit_mb: a
    configuration that would not fit must not push the machine's other work out of memory."""
    import os
    import threading

    def watch() -> None:
        while True:
            rss = read_status("VmRSS")
            if rss is not None and rss > limit_mb:
                print(f"memory: over the {limit_mb:.0f} MB limit ({rss:.0f} MB): stopped", flush=True)
                os._exit(OVER_LIMIT_EXIT)
            time.sleep(every_s)

    threading.Thread(target=watch, daemon=True).start()


def step_function(spec: dict, kind: str, setting: str):
    """(the model, one step of `kind` ("train" | "features") with checkpointing `setting` on a row)."""
    from benchmarks.common import on_device, padded, theta_star_proxy
    from ifexp.checkpointing import checkpointed
    from ifexp.influence.estimator import make_projector
    from ifexp.influence.features import extract_features
    from ifexp.models import load_tokenizer
    from ifexp.train import response_loss_sum

    model = spec.get("model") or theta_star_proxy(spec["base"], spec["model_cfg"])
    collate_fn = padded(load_tokenizer(spec["base"]).pad_token_id)
    enabled = setting == "always"
    dtype = spec.get("dtype", "float32")
    bf16 = dtype == "bfloat16"  # autocast, as train.mixed_precision=bf16 runs
    if kind == "train":
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=0.0)  # lr 0: every step sees the same weights

        def step(row) -> None:
            model.train()
            batch = on_device(collate_fn([row]))
            with checkpointed(model, enabled), torch.autocast(device(), dtype=torch.bfloat16, enabled=bf16):
                loss_sum, n_tokens = response_loss_sum(
                    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits,
                    batch["labels"],
                )
                (loss_sum / n_tokens).backward()
            optimizer.step()
            optimizer.zero_grad()

        return model, step
    projector = make_projector(spec["estimator"], model)

    def features(row) -> None:
        extract_features(
            model, [row], projector, collate_fn, 1, desc="memory", compute_dtype=dtype, gradient_checkpointing=setting
        )

    return model, features


def timed_step(step, row) -> float:
    started = time.perf_counter()
    step(row)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(spec: dict, results) -> None:
    """One configuration in this (fresh) process; puts its result on `results`."""
    from ifexp.models import load_tokenizer

    if spec.get("rss_limit_gb", 16.0) > 0:
        watch_rss(spec.get("rss_limit_gb", 16.0) * 1024)
    _, step = step_function(spec, spec["kind"], spec["checkpointing"])
    rows = synthetic_rows(spec["length"], spec["steps"], spec["prompt_tokens"], len(load_tokenizer(spec["base"])))
    baseline_mb = read_status("VmRSS")
    peak_reset = reset_peak()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seconds = [timed_step(step, row) for row in rows]
    peak_mb = read_status("VmHWM")
    results.put(
        {
            "peak_rss_mb": round(peak_mb, 1) if peak_mb is not None else None,
            "peak_rss_is_since_model_load": peak_reset,
            "rss_before_steps_mb": round(baseline_mb, 1) if baseline_mb is not None else None,
            "step_peak_over_before_mb": round(peak_mb - baseline_mb, 1) if peak_reset and peak_mb else None,
            "gpu_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if torch.cuda.is_available()
            else None,
            "s_per_example": round(statistics.median(seconds[1:] or seconds), 3),
            "s_each_step": [round(s, 3) for s in seconds],
        }
    )


def overhead(spec: dict, results) -> None:
    """What checkpointing costs in time, in one process: a training step and a feature step of one
    row, with checkpointing never and always, alternately (A B B A ...) `repeats` times after a
    warm-up of each; per step, the median of the repetitions' always / never ratios, min and max."""
    from benchmarks.common import theta_star_proxy
    from ifexp.models import load_tokenizer

    spec = {**spec, "model": theta_star_proxy(spec["base"], spec["model_cfg"])}
    (row,) = synthetic_rows(spec["length"], 1, spec["prompt_tokens"], len(load_tokenizer(spec["base"])))
    out: dict = {"length": spec["length"], "repeats": spec["repeats"]}
    for kind in ("train", "features"):
        steps = {setting: step_function(spec, kind, setting)[1] for setting in ("never", "always")}
        for step in steps.values():
            timed_step(step, row)  # warm-up
        seconds: dict[str, list[float]] = {"never": [], "always": []}
        for repeat in range(spec["repeats"]):
            for setting in ("never", "always") if repeat % 2 == 0 else ("always", "never"):
                seconds[setting].append(timed_step(steps[setting], row))
        ratios = [a / n for a, n in zip(seconds["always"], seconds["never"], strict=True)]
        out[kind] = {
            "s_never": [round(v, 2) for v in seconds["never"]],
            "s_always": [round(v, 2) for v in seconds["always"]],
            "always_over_never": {
                "median": round(statistics.median(ratios), 3),
                "min": round(min(ratios), 3),
                "max": round(max(ratios), 3),
            },
        }
    results.put(out)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


@dataclass(kw_only=True)
class Memory(Benchmark):
    """peak memory and time of a training step and of feature extraction, by length and checkpointing"""

    model: str = option("smollm2_135m")
    lengths: list[int] = option([512, 2048, 8192], nargs="*", help="sequence lengths in tokens (batch 1)")
    checkpointing: list[str] = option(["never", "always"], help="train.gradient_checkpointing settings")
    estimator: str = option("proj_fisher", help="the features' estimator config (its projection)")
    steps: int = option(2, help="steps per configuration: the first warms up, the others are timed")
    prompt_tokens: int = option(64, help="tokens of each synthetic row that are its (masked) prompt")
    dtype: str = option(
        "float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: autocast (train.mixed_precision=bf16, estimator.compute_dtype)",
    )
    overhead_length: int = option(
        0, help="also time checkpointing's cost at this length, interleaved in one process (0: not)"
    )
    overhead_repeats: int = option(3, help="repetitions of the interleaved timing")
    rss_limit_gb: float = option(
        16.0, help="a configuration whose RSS passes this stops (reported as over it); 0: no limit"
    )
    cache_dir: str = option("outputs/cache")

    def execute(self) -> dict:
        from ifexp.stages.base_model import prepare_model

        longest = max([*self.lengths, self.overhead_length])
        model_cfg = replace(load_group("model", self.model, ModelConfig), max_seq_len=longest)
        est = load_group("estimator", self.estimator, EstimatorConfig)
        base = prepare_model(model_cfg, self.cache_dir)
        runs: dict = {}
        timing: dict = {}
        common = {"base": base, "model_cfg": model_cfg, "estimator": est, "prompt_tokens": self.prompt_tokens}
        common["dtype"] = self.dtype
        for length in self.lengths:
            for setting in self.checkpointing:
                for kind in ("train", "features"):
                    spec = {**common, "length": length, "checkpointing": setting, "kind": kind}
                    spec.update(steps=self.steps, rss_limit_gb=self.rss_limit_gb)
                    result = in_own_process(measure, spec)
                    if result.get("error", "").endswith(f"(exit code {OVER_LIMIT_EXIT})"):
                        result = {"error": f"over --rss-limit-gb {self.rss_limit_gb}: stopped", "peak_rss_mb": None}
                    runs.setdefault(str(length), {}).setdefault(setting, {})[kind] = result
                    print(f"memory: {length} tokens, checkpointing {setting}, {kind}: {result}", flush=True)
        if self.overhead_length:
            spec = {**common, "length": self.overhead_length, "repeats": self.overhead_repeats}
            timing = in_own_process(overhead, spec)
            print(f"memory: checkpointing's cost at {self.overhead_length} tokens: {timing}", flush=True)
        return {
            "model": self.model,
            "estimator": self.estimator,
            "dtype": self.dtype,
            "device": device(),
            **machine(),
            "rows": f"synthetic: random token ids, exactly each length, the first {self.prompt_tokens} the prompt",
            "peak_measured_as": "VmHWM of the configuration's own process after a reset at model load "
            "(/proc/self/clear_refs), model weights included; gpu: torch.cuda.max_memory_allocated",
            "runs": runs,
            "summary": summarise(runs),
            **({"checkpointing_overhead": timing} if self.overhead_length else {}),
        }


def summarise(runs: dict) -> dict:
    """Per length and setting: features' peak over the training step's, and with checkpointing,
    the peak per 1,000 tokens between consecutive lengths (linear growth: a constant slope)."""
    summary: dict = {"features_over_train_peak": {}, "features_over_train_step_increase": {}}
    for length, settings in runs.items():
        for setting, kinds in settings.items():
            key = f"{length}/{setting}"
            train, features = kinds["train"], kinds["features"]
            summary["features_over_train_peak"][key] = ratio(features.get("peak_rss_mb"), train.get("peak_rss_mb"))
            summary["features_over_train_step_increase"][key] = ratio(
                features.get("step_peak_over_before_mb"), train.get("step_peak_over_before_mb")
            )
    lengths = sorted(runs, key=int)
    for setting in {s for kinds in runs.values() for s in kinds}:
        for kind in ("train", "features"):
            slopes = {}
            for short, long in zip(lengths, lengths[1:], strict=False):
                a, b = runs[short].get(setting, {}).get(kind), runs[long].get(setting, {}).get(kind)
                if a and b and a.get("peak_rss_mb") and b.get("peak_rss_mb"):
                    slopes[f"{short}-{long}"] = round(
                        (b["peak_rss_mb"] - a["peak_rss_mb"]) / (int(long) - int(short)) * 1000, 1
                    )
            summary[f"mb_per_1000_tokens/{setting}/{kind}"] = slopes
    return summary
