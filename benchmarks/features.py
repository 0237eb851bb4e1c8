"""`ifexp-bench features`: the cost of gradient features against a training step and against LESS.

    ifexp-bench features --model smollm2_135m --seq-len 256 --n-examples 32 --out features.json

measures, in one process on the same rows: a plain training step (forward + backward +
optimizer step), feature extraction per estimator (batched per-example gradients + projection +
preconditioner fit), and LESS's gradient collection (`less_style_features`) three ways: as LESS
runs it (batch-size-1 backward, the full LoRA gradients projected 16 at a time by a dense
projection to the same k, Gaussian or, as LESS calls it, Rademacher, regenerated block by block
from its seed as TRAK's CPU projector does), the same with the matrix regenerated for every
example, and with all N gradients projected in one pass. Ratios are taken within the run: the
machine is noisy.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from benchmarks.common import (
    Benchmark,
    load_group,
    machine,
    on_device,
    option,
    padded,
    peak_rss_mb,
    read_status,
    reset_peak,
    theta_star_proxy,
    timed,
)
from ifexp.influence.project import DenseProjector
from ifexp.schema import EstimatorConfig, ModelConfig

# LESS (collect_grad_reps.collect_grads): `project_interval = 16  # project every 16 batches`
LESS_PROJECT_INTERVAL = 16


def example_gradient(model, params: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict:
    """Layer name -> (1, d_layer) gradient of one example's loss (a batch of one, LESS's loop)."""
    from ifexp.influence.capture import per_example_losses

    batch = on_device(batch)
    loss = per_example_losses(model(input_ids=batch["input_ids"]).logits, batch["labels"]).sum()
    grads = torch.autograd.grad(loss, list(params.values()))
    return {name: grad.reshape(1, -1) for name, grad in zip(params, grads, strict=True)}


def less_style_features(
    model, rows: list, collate_fn: Callable, projector: DenseProjector, interval: int = LESS_PROJECT_INTERVAL
) -> torch.Tensor:
    """LESS's gradient features of rows, (len(rows), k): one backward per example, the full
    gradients of every trainable weight held until `interval` of them are pending, then projected
    together by one `project_flat` call, which regenerates the dense matrix block by block from
    its seed (TRAK's BasicProjector, LESS's projector without fast_jl's CUDA kernel, does the
    same per `project` call). interval=1 regenerates the whole matrix for every example."""
    from ifexp.influence.capture import trainable_linears

    params = {name: layer.weight for name, layer in trainable_linears(model).items()}
    model.eval()
    projected = []
    for start in range(0, len(rows), interval):
        grads = [example_gradient(model, params, collate_fn([row])) for row in rows[start : start + interval]]
        with torch.no_grad():
            projected.append(projector.project_flat({name: torch.cat([g[name] for g in grads]) for name in params}))
    return torch.cat(projected)


def train_steps(model, optimizer, batches: list[dict[str, torch.Tensor]]) -> None:
    """Plain training steps (forward, backward, optimizer step) over the batches."""
    model.train()
    for batch in batches:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def over(seconds: float, per_estimator: dict[str, float]) -> dict[str, float]:
    """seconds as a multiple of each estimator's."""
    return {name: seconds / value for name, value in per_estimator.items()}


@dataclass(kw_only=True)
class Features(Benchmark):
    """feature extraction cost vs training and vs LESS-style"""

    model: str = option("smollm2_135m")
    seq_len: int = option(256)
    n_examples: int = option(32)
    batch_size: int = option(8)
    estimators: list[str] = option(["grad_dot", "proj_fisher", "logra", "kfac"])
    less_k: int = option(4096, help="the estimators' k, for a like-for-like baseline")
    less_interval: int = option(LESS_PROJECT_INTERVAL, help="LESS projects this many gradients at a time")
    less_projection: str = option(
        "gaussian", choices=["gaussian", "rademacher"], help="the dense matrix's entries (LESS calls TRAK's rademacher)"
    )
    less_examples: int = option(8, help="the per-example-projection variant is slow: time it on fewer")
    repeats: int = option(3, help="interleaved repetitions of every timing (each ratio: median, min, max)")
    cache_dir: str = option("outputs/cache")

    def execute(self) -> dict:
        from ifexp.data import gsm_symbolic_examples
        from ifexp.models import load_tokenizer
        from ifexp.stages.base_model import prepare_model
        from ifexp.train import encode_examples

        model_cfg = replace(load_group("model", self.model, ModelConfig), max_seq_len=self.seq_len)
        base = prepare_model(model_cfg, self.cache_dir)
        tokenizer = load_tokenizer(base)
        # extra examples: a few may be dropped when the prompt alone exceeds --seq-len
        examples = gsm_symbolic_examples(2 * self.n_examples + 10, seed=12345)
        rows = encode_examples(tokenizer, examples, model_cfg, "truncate").rows()
        warmup_rows, rows = rows[:2], rows[2 : 2 + self.n_examples]
        collate_fn = padded(tokenizer.pad_token_id)
        model = theta_star_proxy(base, model_cfg)
        n = len(rows)
        result: dict = {
            "model": self.model,
            "seq_len": self.seq_len,
            "n_examples": n,
            "batch_size": self.batch_size,
            "mean_tokens": sum(len(ids) for ids, _ in rows) / n,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "repeats": self.repeats,
            **machine(),
        }
        phases, per_example = self.phases(model, rows, warmup_rows, collate_fn)
        for warm_up in phases.values():  # every phase once, untimed (kernels, hash tables, allocator)
            warm_up(warmup=True)
        seconds: dict[str, list[float]] = {name: [] for name in phases}
        peaks: dict[str, float] = {}
        for repeat in range(self.repeats):
            # A B C ... then ... C B A: drift over the run hits every side alike
            order = list(phases) if repeat % 2 == 0 else list(reversed(phases))
            for name in order:
                reset = reset_peak()
                took = phases[name]()
                seconds[name].append(took / per_example[name])
                peak = read_status("VmHWM")
                if reset and peak is not None:
                    peaks[name] = max(peaks.get(name, 0.0), round(peak, 1))
        result.update(self.report(seconds, peaks))
        result["order"] = "each repetition runs every phase, alternately forward and backward: " + ", ".join(phases)
        result["peak_rss_mb"] = peak_rss_mb()
        return result

    def phases(self, model, rows: list, warmup_rows: list, collate_fn) -> tuple[dict[str, Callable], dict[str, int]]:
        """name -> a callable that runs the phase once and returns its seconds (warmup=True: on the
        warm-up rows); name -> the examples it covers."""
        from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
        from ifexp.influence.features import extract_features

        n = self.n_timed = len(rows)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # lr 0: keep theta
        batches = [on_device(collate_fn(rows[i : i + self.batch_size])) for i in range(0, n, self.batch_size)]

        def train(warmup: bool = False) -> float:
            return timed(train_steps, model, optimizer, [on_device(collate_fn(warmup_rows))] if warmup else batches)[0]

        phases: dict[str, Callable] = {"train_step": train}
        per_example = {"train_step": n}
        self.dims, self.bytes_per, self.fit_s = {}, {}, {}
        for name in self.estimators:
            est = load_group("estimator", name, EstimatorConfig)

            def features(warmup: bool = False, est=est, name=name) -> float:
                """Batched capture + projection + the preconditioner's fit."""
                projector = make_projector(est, model)
                seconds, (values, _) = timed(
                    extract_features, model, warmup_rows if warmup else rows, projector, collate_fn, est.batch_size
                )
                factors = (
                    {"input_cov": projector.input_cov, "grad_cov": projector.grad_cov}
                    if est.preconditioner == "kfac"
                    else None
                )
                fit_seconds, _ = timed(make_estimator_preconditioner(est, factors).fit, torch.from_numpy(values))
                self.dims[name] = projector.k
                itemsize = torch.empty((), dtype=getattr(torch, est.store_dtype)).element_size()
                self.bytes_per[name] = projector.k * itemsize
                self.fit_s.setdefault(name, []).append(fit_seconds)
                return seconds + fit_seconds

            phases[f"features/{name}"] = features
            per_example[f"features/{name}"] = n

        # LESS: batch-size-1 backward, dense projection of the full gradient to the same k, 16 gradients
        # at a time (as LESS runs), one at a time, and all N in one pass
        projector = DenseProjector(self.less_k, seed=0, kind=self.less_projection)
        less_rows = rows[: self.less_examples]

        def less(interval: int, part: list) -> Callable:
            def run(warmup: bool = False) -> float:
                return timed(
                    less_style_features, model, warmup_rows[:1] if warmup else part, collate_fn, projector, interval
                )[0]

            return run

        phases["less_style"] = less(self.less_interval, rows)
        phases["less_per_example_projection"] = less(1, less_rows)
        phases["dense_amortised"] = less(n, rows)
        per_example.update(less_style=n, less_per_example_projection=len(less_rows), dense_amortised=n)
        self.n_less_per_example = len(less_rows)
        return phases, per_example

    def report(self, seconds: dict[str, list[float]], peaks: dict[str, float]) -> dict:
        """Seconds per example and ratios, each the median over the repetitions of that repetition's
        own ratio, with min and max (`spread`); peak RSS per phase (the most over repetitions)."""
        names = list(self.estimators)
        features = {name: seconds[f"features/{name}"] for name in names}
        train = seconds["train_step"]

        def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
            return [a / b for a, b in zip(numerator, denominator, strict=True)]

        series = {
            "features_over_train": {name: ratios(features[name], train) for name in names},
            "less_style_over_features": {name: ratios(seconds["less_style"], features[name]) for name in names},
            "less_per_example_projection_over_features": {
                name: ratios(seconds["less_per_example_projection"], features[name]) for name in names
            },
            "dense_amortised_over_features": {
                name: ratios(seconds["dense_amortised"], features[name]) for name in names
            },
        }
        spread = {key: {name: summary(values) for name, values in per.items()} for key, per in series.items()}
        spread.update(
            train_step_s_per_example=summary(train),
            features_s_per_example={name: summary(features[name]) for name in names},
            less_style_s_per_example=summary(seconds["less_style"]),
            less_per_example_projection_s_per_example=summary(seconds["less_per_example_projection"]),
            dense_amortised_s_per_example=summary(seconds["dense_amortised"]),
        )

        def medians(value):
            return {k: medians(v) for k, v in value.items()} if "median" not in value else value["median"]

        peak_over_dense = {
            name: round(peaks[f"features/{name}"] / peaks["dense_amortised"], 3)
            for name in names
            if f"features/{name}" in peaks and "dense_amortised" in peaks
        }
        return {
            **{key: medians(value) for key, value in spread.items()},
            "spread": spread,
            "precondition_fit_s": {name: statistics.median(values) for name, values in self.fit_s.items()},
            "feature_dim": self.dims,
            "bytes_per_example": self.bytes_per,
            "less_style_k": self.less_k,
            "less_style_project_interval": self.less_interval,
            "less_style_projection": self.less_projection,
            "less_style_n_examples": self.n_timed,
            "less_per_example_projection_n_examples": self.n_less_per_example,
            "peak_rss_mb_by_phase": peaks,
            "features_peak_over_dense_amortised_peak": peak_over_dense,
        }


def summary(values: list[float]) -> dict:
    """median, min, max (and the values) of one timing or ratio over the repetitions."""
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "values": [round(v, 4) for v in values],
    }
