"""`ifexp-bench`: the performance harness; every result is a JSON file.

    ifexp-bench features --model smollm2_135m --seq-len 256 --n-examples 32 --out features.json

measures, in one process on the same batches: a plain training step (forward + backward +
optimizer step), feature extraction per estimator (batched per-example gradients + projection +
preconditioner fit), and a LESS/TRAK-style baseline (batch-size-1 backward, then a dense
Gaussian projection of the full LoRA gradient to the same k, regenerated from its seed because
a d x k matrix does not fit in memory), plus a kinder dense baseline that projects all N
gradients in one generation pass. Ratios are taken within the run: the machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ifexp.schema import EstimatorConfig, ModelConfig, TrainConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_group(group: str, name: str, schema):
    """A config-group YAML as its dataclass (no Hydra: plain OmegaConf merge onto the schema)."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
        raise SystemExit(f"ifexp-bench: error: unknown {group} '{name}' (known: {known})")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path)))


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def bench_features(args: argparse.Namespace) -> dict:
    from ifexp.data import gsm_symbolic_examples
    from ifexp.influence.capture import per_example_losses, trainable_linears
    from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
    from ifexp.influence.features import extract_features
    from ifexp.influence.project import DenseProjector
    from ifexp.models import load_model, load_tokenizer, prepare_model
    from ifexp.train import apply_lora, collate, encode_examples

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_cfg = replace(load_group("model", args.model, ModelConfig), max_seq_len=args.seq_len)
    base = prepare_model(model_cfg, args.cache_dir)
    tokenizer = load_tokenizer(base)
    # extra examples: a few may be dropped when the prompt alone exceeds --seq-len
    examples = gsm_symbolic_examples(2 * args.n_examples + 10, seed=12345)
    encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
    rows = list(zip(encoded.input_ids, encoded.prompt_lengths, strict=True))
    warmup_rows, rows = rows[:2], rows[2 : 2 + args.n_examples]
    pad = tokenizer.pad_token_id
    batches = [collate(rows[i : i + args.batch_size], pad) for i in range(0, len(rows), args.batch_size)]

    torch.manual_seed(0)
    model = apply_lora(load_model(base), model_cfg, TrainConfig())
    # Influence is taken at theta* (after fine-tuning): LoRA B is non-zero there.
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)
    n = len(rows)
    result: dict = {
        "model": args.model,
        "seq_len": args.seq_len,
        "n_examples": n,
        "batch_size": args.batch_size,
        "mean_tokens": sum(len(ids) for ids, _ in rows) / n,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }

    # 1. plain training step
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # lr 0: keep theta

    def train_pass(batch_list):
        model.train()
        for batch in batch_list:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    train_pass([collate(warmup_rows, pad)])
    seconds, _ = _timed(lambda: train_pass(batches))
    result["train_step_s_per_example"] = seconds / n

    # 2. features per estimator (batched capture + projection + preconditioner fit)
    features_s, fit_s, bytes_per, dims = {}, {}, {}, {}
    for name in args.estimators:
        est = load_group("estimator", name, EstimatorConfig)
        projector = make_projector(est, model)
        extract_features(model, warmup_rows, projector, lambda b: collate(b, pad), est.batch_size, desc="warm-up")
        seconds, (features, _) = _timed(
            lambda: extract_features(model, rows, projector, lambda b: collate(b, pad), est.batch_size, desc=name)  # noqa: B023
        )
        factors = (
            {"input_cov": projector.input_cov, "grad_cov": projector.grad_cov} if est.preconditioner == "kfac" else None
        )
        fit_seconds, _ = _timed(
            lambda: make_estimator_preconditioner(est, factors).fit(torch.from_numpy(features))  # noqa: B023
        )
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

    # 3. LESS/TRAK-style: one backward per example, dense Gaussian projection of the full gradient
    less_rows = rows[: args.less_examples]
    projector = DenseProjector(args.less_k, seed=0, kind="gaussian")
    params = {name: layer.weight for name, layer in trainable_linears(model).items()}
    model.eval()

    def less_pass(row_list, amortised: bool):
        pending = []
        for row in row_list:
            batch = collate([row], pad)
            loss = per_example_losses(model(input_ids=batch["input_ids"]).logits, batch["labels"]).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            flat = {n_: g.reshape(1, -1) for n_, g in zip(params, grads, strict=True)}
            if amortised:
                pending.append(flat)
                continue
            with torch.no_grad():  # LESS/TRAK: the projection runs once per (size-1) batch
                projector.project_flat(flat)
        if pending:
            with torch.no_grad():  # a kinder baseline: one pass of matrix generation for all examples
                projector.project_flat({n_: torch.cat([p[n_] for p in pending]) for n_ in params})

    less_pass(warmup_rows[:1], amortised=False)
    seconds, _ = _timed(lambda: less_pass(less_rows, amortised=False))
    amortised_seconds, _ = _timed(lambda: less_pass(rows, amortised=True))
    result["less_style_k"] = args.less_k
    result["less_style_n_examples"] = len(less_rows)
    result["less_style_s_per_example"] = seconds / len(less_rows)
    result["less_style_over_features"] = {k: result["less_style_s_per_example"] / v for k, v in features_s.items()}
    result["dense_amortised_s_per_example"] = amortised_seconds / n
    result["dense_amortised_over_features"] = {
        k: result["dense_amortised_s_per_example"] / v for k, v in features_s.items()
    }
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ifexp-bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    features = commands.add_parser("features", help="feature extraction cost vs training and vs LESS-style")
    features.add_argument("--model", default="smollm2_135m")
    features.add_argument("--seq-len", type=int, default=256)
    features.add_argument("--n-examples", type=int, default=32)
    features.add_argument("--batch-size", type=int, default=8)
    features.add_argument("--estimators", nargs="+", default=["grad_dot", "proj_fisher", "logra", "kfac"])
    features.add_argument("--less-k", type=int, default=4096, help="the estimators' k, for a like-for-like baseline")
    features.add_argument("--less-examples", type=int, default=8, help="the baseline is slow: time it on fewer")
    features.add_argument("--cache-dir", default="outputs/cache")
    features.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = bench_features(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
