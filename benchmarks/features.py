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
    cache_dir: str = option("outputs/cache")

    def execute(self) -> dict:
        from ifexp.data import gsm_symbolic_examples
        from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
        from ifexp.influence.features import extract_features
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
        batches = [on_device(collate_fn(rows[i : i + self.batch_size])) for i in range(0, len(rows), self.batch_size)]

        model = theta_star_proxy(base, model_cfg)
        n = len(rows)
        result: dict = {
            "model": self.model,
            "seq_len": self.seq_len,
            "n_examples": n,
            "batch_size": self.batch_size,
            "mean_tokens": sum(len(ids) for ids, _ in rows) / n,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            **machine(),
        }

        # 1. plain training step
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # lr 0: keep theta
        train_steps(model, optimizer, [on_device(collate_fn(warmup_rows))])
        seconds, _ = timed(train_steps, model, optimizer, batches)
        result["train_step_s_per_example"] = seconds / n

        # 2. features per estimator (batched capture + projection + preconditioner fit)
        features_s, fit_s, bytes_per, dims = {}, {}, {}, {}
        for name in self.estimators:
            est = load_group("estimator", name, EstimatorConfig)
            projector = make_projector(est, model)
            extract_features(model, warmup_rows, projector, collate_fn, est.batch_size, desc="warm-up")
            seconds, (features, _) = timed(
                extract_features, model, rows, projector, collate_fn, est.batch_size, desc=name
            )
            factors = (
                {"input_cov": projector.input_cov, "grad_cov": projector.grad_cov}
                if est.preconditioner == "kfac"
                else None
            )
            fit_seconds, _ = timed(make_estimator_preconditioner(est, factors).fit, torch.from_numpy(features))
            features_s[name] = (seconds + fit_seconds) / n
            fit_s[name] = fit_seconds
            dims[name] = projector.k
            bytes_per[name] = projector.k * torch.empty((), dtype=getattr(torch, est.store_dtype)).element_size()
        result.update(
            features_s_per_example=features_s,
            precondition_fit_s=fit_s,
            feature_dim=dims,
            bytes_per_example=bytes_per,
            features_over_train={k: v / result["train_step_s_per_example"] for k, v in features_s.items()},
        )

        # 3. LESS: batch-size-1 backward, dense projection of the full gradient to the same k,
        # 16 gradients at a time (as LESS runs), one at a time, and all N in one pass
        projector = DenseProjector(self.less_k, seed=0, kind=self.less_projection)
        less_style_features(model, warmup_rows[:1], collate_fn, projector, interval=1)  # warm-up
        per_example_rows = rows[: self.less_examples]
        fair_s, _ = timed(less_style_features, model, rows, collate_fn, projector, self.less_interval)
        per_example_s, _ = timed(less_style_features, model, per_example_rows, collate_fn, projector, 1)
        amortised_s, _ = timed(less_style_features, model, rows, collate_fn, projector, n)
        result.update(
            less_style_k=self.less_k,
            less_style_project_interval=self.less_interval,
            less_style_projection=self.less_projection,
            less_style_n_examples=n,
            less_style_s_per_example=fair_s / n,
            less_style_over_features=over(fair_s / n, features_s),
            less_per_example_projection_n_examples=len(per_example_rows),
            less_per_example_projection_s_per_example=per_example_s / len(per_example_rows),
            less_per_example_projection_over_features=over(per_example_s / len(per_example_rows), features_s),
            dense_amortised_s_per_example=amortised_s / n,
            dense_amortised_over_features=over(amortised_s / n, features_s),
            peak_rss_mb=peak_rss_mb(),
        )
        return result
