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
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
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


def device() -> str:
    """The GPU where there is one (scripts/gpu_check.sh), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def on_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device()) for name, tensor in batch.items()}


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
    from ifexp.train import collate

    model = theta_star_proxy(base, model_cfg)
    pad = load_tokenizer(base).pad_token_id
    features, _ = extract_features(
        model, rows, make_projector(est, model), lambda b: collate(b, pad), est.batch_size, compute_dtype=compute_dtype
    )
    return features


def bench_features(args: argparse.Namespace) -> dict:
    from ifexp.data import gsm_symbolic_examples
    from ifexp.influence.capture import per_example_losses, trainable_linears
    from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
    from ifexp.influence.features import extract_features
    from ifexp.influence.project import DenseProjector
    from ifexp.models import load_tokenizer, prepare_model
    from ifexp.train import collate, encode_examples

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_cfg = replace(load_group("model", args.model, ModelConfig), max_seq_len=args.seq_len)
    base = prepare_model(model_cfg, args.cache_dir)
    tokenizer = load_tokenizer(base)
    # extra examples: a few may be dropped when the prompt alone exceeds --seq-len
    examples = gsm_symbolic_examples(2 * args.n_examples + 10, seed=12345)
    encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
    rows = encoded.rows()
    warmup_rows, rows = rows[:2], rows[2 : 2 + args.n_examples]
    pad = tokenizer.pad_token_id
    batches = [on_device(collate(rows[i : i + args.batch_size], pad)) for i in range(0, len(rows), args.batch_size)]

    model = theta_star_proxy(base, model_cfg)
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

    train_pass([on_device(collate(warmup_rows, pad))])
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
            batch = on_device(collate([row], pad))
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


def mean_spearman(exact: np.ndarray, approx: np.ndarray) -> float:
    """Spearman correlation of two (N, Q) score matrices, column by column, averaged over queries."""
    from ifexp.influence.lds import column_spearman

    return float(np.mean(column_spearman(exact, approx)))


def _median_time(fn, repeats: int = 5) -> float:
    return float(np.median([_timed(fn)[0] for _ in range(repeats)]))


def bench_scores(args: argparse.Namespace) -> dict:
    """Scoring cost and approximations: growth with N and Q, low-rank queries, 2 processes, bf16."""
    from ifexp.distributed import run_sharded
    from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
    from ifexp.influence.features import extract_features
    from ifexp.influence.score import influence_matrix
    from ifexp.models import load_tokenizer, prepare_model
    from ifexp.train import collate

    model_cfg = replace(load_group("model", args.model, ModelConfig), max_seq_len=args.seq_len)
    est = load_group("estimator", args.estimator, EstimatorConfig)
    base = prepare_model(model_cfg, args.cache_dir)
    rows = benchmark_rows(base, model_cfg, args.n_train + args.n_queries)
    train_rows, query_rows = rows[: args.n_train], rows[args.n_train :]
    model = theta_star_proxy(base, model_cfg)
    pad = load_tokenizer(base).pad_token_id
    projector = make_projector(est, model)

    def features_of(part, compute_dtype="float32"):
        return extract_features(
            model,
            part,
            projector,
            lambda b: collate(b, pad),
            est.batch_size,
            desc="features",
            compute_dtype=compute_dtype,
        )[0]

    def growing(part_rows) -> tuple[np.ndarray, dict[int, float]]:
        """Features of all rows, timed at 1/4, 1/2 and all of them (extraction streams over rows)."""
        sizes = [len(part_rows) // 4, len(part_rows) // 2, len(part_rows)]
        chunks, seconds, elapsed, done = [], {}, 0.0, 0
        for size in sizes:
            took, chunk = _timed(lambda: features_of(part_rows[done:size]))  # noqa: B023
            elapsed, done = elapsed + took, size
            chunks.append(chunk)
            seconds[size] = round(elapsed, 2)
        return np.concatenate(chunks), seconds

    features_of(train_rows[:2])  # warm-up
    train_features, train_seconds = growing(train_rows)
    query_features, query_seconds = growing(query_rows)

    def score(n: int, q: int, rank: int = 0) -> np.ndarray:
        preconditioner = make_estimator_preconditioner(est).fit(torch.from_numpy(train_features[:n]))
        return influence_matrix(train_features[:n], query_features[:q], preconditioner, query_rank=rank)

    n_sizes, q_sizes = list(train_seconds), list(query_seconds)
    result: dict = {
        "model": args.model,
        "estimator": args.estimator,
        "k": projector.k,
        "n_train": args.n_train,
        "n_queries": args.n_queries,
        "seq_len": args.seq_len,
        "threads": torch.get_num_threads(),
        "queries_are": "held-out gsm_symbolic reference traces (no generation step), at a theta* proxy",
        "cost_growth": {
            "features_s_by_n_train": train_seconds,
            "features_s_by_n_queries": query_seconds,
            "scoring_s_by_n_train": {n: round(_median_time(lambda: score(n, args.n_queries)), 4) for n in n_sizes},  # noqa: B023
            "scoring_s_by_n_queries": {q: round(_median_time(lambda: score(args.n_train, q)), 4) for q in q_sizes},  # noqa: B023
        },
    }

    # Low-rank query batching: the same fitted preconditioner, exact vs rank-r queries.
    preconditioner = make_estimator_preconditioner(est).fit(torch.from_numpy(train_features))
    exact = influence_matrix(train_features, query_features, preconditioner)
    exact_s = _median_time(lambda: influence_matrix(train_features, query_features, preconditioner))
    curve = {}
    for rank in sorted({*args.ranks, args.rank}):
        approx = influence_matrix(train_features, query_features, preconditioner, query_rank=rank)
        took = _median_time(lambda: influence_matrix(train_features, query_features, preconditioner, query_rank=rank))  # noqa: B023
        curve[rank] = {"rank_corr": round(mean_spearman(exact, approx), 4), "speedup": round(exact_s / took, 3)}
    singular = np.linalg.svd(preconditioner.query_side(torch.from_numpy(query_features)).numpy(), compute_uv=False)
    energy = np.cumsum(singular**2) / np.sum(singular**2)
    result.update(
        lowrank_rank=args.rank,
        lowrank_rank_corr=curve[args.rank]["rank_corr"],
        lowrank_speedup=curve[args.rank]["speedup"],
        lowrank_curve=curve,
        lowrank_timing="influence_matrix with the preconditioner already fitted (query solve + SVD + train pass)",
        query_energy_at_rank={r: round(float(energy[min(r, len(energy)) - 1]), 4) for r in curve},
    )

    if args.two_process_n > 0:  # two processes (gloo / nccl workers) vs this process, on the same rows
        two_rows = train_rows[: args.two_process_n]
        kwargs = dict(base=base, model_cfg=model_cfg, rows=two_rows, est=est)
        took, two_process = _timed(lambda: run_sharded(proxy_features, kwargs, 2))
        one_process = train_features[: len(two_rows)]
        result.update(
            two_process_n=len(two_rows),
            two_process_s=round(took, 2),
            two_process_max_abs_diff=float(np.abs(two_process - one_process).max()),
            two_process_max_abs_feature=float(np.abs(one_process).max()),
        )

    # bf16 autocast vs fp32 on a subset: speed and agreement of features and scores.
    sub_train, sub_query = train_rows[: args.bf16_n_train], query_rows[: args.bf16_n_queries]
    timings, subsets = {}, {}
    for dtype in ("float32", "bfloat16"):
        features_of(sub_train[:2], dtype)  # warm-up (bf16 kernels)
        timings[dtype], train_part = _timed(lambda: features_of(sub_train, dtype))  # noqa: B023
        subsets[dtype] = (train_part, features_of(sub_query, dtype))
    fitted = {d: make_estimator_preconditioner(est).fit(torch.from_numpy(subsets[d][0])) for d in subsets}
    scores = {d: influence_matrix(*subsets[d], fitted[d]) for d in subsets}
    # a training step (forward + backward of the mean loss, as Accelerate's bf16 autocast runs it)
    train_batches = [on_device(collate(sub_train[i : i + 8], pad)) for i in range(0, len(sub_train), 8)]

    def train_steps(dtype: str) -> None:
        for batch in train_batches:
            with torch.autocast(device(), dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                loss = model(**batch).loss
            loss.backward()
        model.zero_grad()

    step_s = {}
    for dtype in ("float32", "bfloat16"):
        train_steps(dtype)  # warm-up
        step_s[dtype] = _timed(lambda: train_steps(dtype))[0]  # noqa: B023
    cosine = torch.nn.functional.cosine_similarity(
        torch.from_numpy(subsets["float32"][0]), torch.from_numpy(subsets["bfloat16"][0]), dim=1
    )
    result.update(
        bf16_n_train=len(sub_train),
        bf16_n_queries=len(sub_query),
        bf16_features_speedup=round(timings["float32"] / timings["bfloat16"], 3),
        bf16_train_step_speedup=round(step_s["float32"] / step_s["bfloat16"], 3),
        bf16_feature_cosine_min=round(float(cosine.min()), 4),
        bf16_feature_cosine_mean=round(float(cosine.mean()), 4),
        bf16_score_rank_corr=round(mean_spearman(scores["float32"], scores["bfloat16"]), 4),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return result


def load_trained(base: str, method: str, out_dir: Path):
    """A fine-tuned model ready for gradients: the LoRA matrices (or every weight) trainable."""
    from ifexp.models import load_for_gradients

    weights = str(out_dir / "weights")
    model = load_for_gradients(weights) if method == "full" else load_for_gradients(base, adapter=weights)
    return model.to(device())


def query_losses(model, rows: list, pad: int, batch_size: int = 16) -> np.ndarray:
    from ifexp.influence.capture import per_example_losses
    from ifexp.train import collate

    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = on_device(collate(rows[start : start + batch_size], pad))
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses.append(per_example_losses(logits, batch["labels"]).cpu().numpy())
    return np.concatenate(losses)


def bench_lds(args: argparse.Namespace) -> dict:
    """LDS per estimator (+ k and damping ablations of proj_fisher) from M retrainings on subsets."""
    import tempfile

    from tqdm.auto import tqdm

    from ifexp.data import gsm_symbolic_examples
    from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
    from ifexp.influence.features import extract_features
    from ifexp.influence.lds import linear_datamodeling_score, predicted_losses, subset_masks
    from ifexp.influence.score import influence_matrix
    from ifexp.models import load_tokenizer, prepare_model
    from ifexp.train import collate, encode_examples, finetune

    started = time.perf_counter()
    model_cfg = replace(load_group("model", args.model, ModelConfig), max_seq_len=args.seq_len)
    base = prepare_model(model_cfg, args.cache_dir)
    train_cfg = replace(load_group("train", args.method, TrainConfig), epochs=args.epochs, lr=args.lr, lora_dropout=0.0)
    tokenizer = load_tokenizer(base)
    examples = gsm_symbolic_examples(args.n_train + args.n_queries, seed=args.data_seed)
    train, queries = examples[: args.n_train], examples[args.n_train :]
    encoded = encode_examples(tokenizer, train + queries, model_cfg, "truncate")
    if encoded.n_rejected:
        raise SystemExit(f"ifexp-bench: error: {encoded.n_rejected} prompts exceed --seq-len {args.seq_len}")
    rows = encoded.rows()
    train_rows, query_rows = rows[: args.n_train], rows[args.n_train :]
    pad = tokenizer.pad_token_id

    with tempfile.TemporaryDirectory(prefix="ifexp-lds-") as work:
        # fine-tuning truncates exactly as encode_examples did above (train_cfg.overlong = truncate)
        full = finetune(base, train, model_cfg, train_cfg, args.seed, Path(work) / "full")
        model = load_trained(base, args.method, Path(work) / "full")

        def influence_of(est: EstimatorConfig) -> np.ndarray:
            projector = make_projector(est, model)
            collate_fn = lambda b: collate(b, pad)  # noqa: E731
            train_features, _ = extract_features(model, train_rows, projector, collate_fn, est.batch_size)
            factors = (
                {"input_cov": projector.input_cov, "grad_cov": projector.grad_cov}
                if est.preconditioner == "kfac"
                else None
            )
            query_features, _ = extract_features(
                model, query_rows, make_projector(est, model), collate_fn, est.batch_size
            )
            preconditioner = make_estimator_preconditioner(est, factors).fit(torch.from_numpy(train_features))
            return influence_matrix(train_features, query_features, preconditioner)

        estimators = {name: load_group("estimator", name, EstimatorConfig) for name in args.estimators}
        proj_fisher = estimators.get("proj_fisher", load_group("estimator", "proj_fisher", EstimatorConfig))
        influences = {name: influence_of(est) for name, est in estimators.items()}
        influences["exact_grad_dot"] = influence_of(
            replace(estimators.get("grad_dot", proj_fisher), projection="none", preconditioner="grad_dot")
        )
        k_ablation = {k: influence_of(replace(proj_fisher, k=k)) for k in args.ks}
        damping_ablation = {d: influence_of(replace(proj_fisher, damping=d)) for d in args.dampings}

        masks = subset_masks(args.n_train, args.n_subsets, args.subset_fraction, seed=args.seed)
        actual = np.empty((args.n_subsets, len(query_rows)))
        for m, mask in enumerate(tqdm(masks, desc="retrain on subsets")):
            subset = [e for e, keep in zip(train, mask, strict=True) if keep]
            out = Path(work) / f"subset{m}"
            finetune(base, subset, model_cfg, train_cfg, args.seed, out)
            actual[m] = query_losses(load_trained(base, args.method, out), query_rows, pad)
            shutil.rmtree(out)

    def lds(influence: np.ndarray) -> float:
        return round(linear_datamodeling_score(predicted_losses(influence, masks), actual), 4)

    return {
        "model": args.model,
        "method": args.method,
        "n_train": args.n_train,
        "n_queries": len(query_rows),
        "n_subsets": args.n_subsets,
        "subset_fraction": args.subset_fraction,
        "epochs": args.epochs,
        "theta_star_loss": [full["first_loss"], full["final_loss"]],
        "query_loss_mean_over_subsets": round(float(actual.mean()), 4),
        "query_loss_sd_across_subsets": round(float(actual.std(axis=0).mean()), 4),
        "lds": {name: lds(influence) for name, influence in influences.items()},
        "ablations": {
            "proj_fisher_k": {k: lds(v) for k, v in k_ablation.items()},
            "proj_fisher_damping": {d: lds(v) for d, v in damping_ablation.items()},
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


def bench_flaws(args: argparse.Namespace) -> dict:
    """Each strategy's flaw detection (AUROC, per kind; precision at |flawed| removed) for one job config.

    The signals come from the pipeline's own cached stages (compute_signals), so the numbers are
    those a sweep's jobs would report, without fine-tuning and evaluating the pruned models.
    """
    from hydra import compose, initialize_config_dir

    from ifexp.cli import CONF_DIR, _to_job_config
    from ifexp.models import prepare_model
    from ifexp.pipeline import compute_signals, dataset_stage
    from ifexp.schema import validate
    from ifexp.selection import flaw_detection, needed_signals, removal_scores, select

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = _to_job_config(compose(config_name="config", overrides=args.overrides))
    validate(cfg)
    cache_dir = Path(cfg.paths.cache_dir)
    _, splits = dataset_stage(cfg, cache_dir)
    n_flawed = sum(bool(e.flaw) for e in splits["train"])
    if not n_flawed:
        raise SystemExit("ifexp-bench: error: the training set has no flaw labels (dataset.flaw_fraction=0?)")
    base = prepare_model(cfg.model, cache_dir)
    needs = set().union(*(needed_signals(strategy) for strategy in args.strategies))
    timings, metrics = {}, {}
    signals, _ = compute_signals(cfg, cache_dir, splits, base, needs, timings, metrics)
    detection = {}
    for strategy in args.strategies:
        pruning = replace(cfg.pruning, strategy=strategy, fraction=n_flawed / len(signals.ids))
        scores = removal_scores(pruning, signals, cfg.seed)
        found = flaw_detection(select(pruning, signals, cfg.seed, scores), scores, signals.flaw)
        detection[strategy] = {key.removeprefix("flaw/"): round(value, 4) for key, value in found.items()}
    return {
        "overrides": args.overrides,
        "n_train": len(signals.ids),
        "n_flawed": n_flawed,
        "removed": "as many as are flawed (precision = recall)",
        "theta_star": {k.removeprefix("theta_star/"): v for k, v in metrics.items() if k.startswith("theta_star/")},
        "queries": {k.removeprefix("queries/"): v for k, v in metrics.items() if k.startswith("queries/")},
        "detection": detection,
        "seconds": timings,
    }


def bench_e2e(args: argparse.Namespace) -> dict:
    """Run a sweep (default: the CPU demo) from an empty cache and time it, in all and per stage."""
    import subprocess

    from ifexp.report import load_runs, stage_times

    sweep_dir, cache_dir = Path(args.work_dir) / "sweep", Path(args.work_dir) / "cache"
    if not args.reuse:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    command = [
        str(Path(sys.executable).with_name("ifexp")),
        f"sweeps={args.sweep}",
        f"paths.cache_dir={cache_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        *args.overrides,
    ]
    wall_s, completed = _timed(lambda: subprocess.run(command))
    runs = load_runs(sweep_dir)
    stages = stage_times(runs)
    return {
        "sweep": args.sweep,
        "command": " ".join(command),
        "exit_code": completed.returncode,
        "n_jobs": len(runs),
        "wall_s": round(wall_s, 1),
        "goal_s": args.goal_s,
        "meets_goal": wall_s <= args.goal_s and completed.returncode == 0,
        "stages": {
            stage: {"artifacts": n, "total_s": round(total, 1), "slowest_s": round(slowest, 1)}
            for stage, (n, total, slowest) in sorted(stages.items(), key=lambda item: -item[1][1])
        },
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }


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
    scores = commands.add_parser("scores", help="scoring cost growth, low-rank queries, 2 processes, bf16")
    scores.add_argument("--model", default="smollm2_135m")
    scores.add_argument("--estimator", default="proj_fisher")
    scores.add_argument("--seq-len", type=int, default=256)
    scores.add_argument("--n-train", type=int, default=256)
    scores.add_argument("--n-queries", type=int, default=64)
    scores.add_argument("--rank", type=int, default=8, help="the low-rank setting reported as lowrank_*")
    scores.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 16, 32, 48])
    scores.add_argument("--two-process-n", type=int, default=32)
    scores.add_argument("--bf16-n-train", type=int, default=32)
    scores.add_argument("--bf16-n-queries", type=int, default=16)
    scores.add_argument("--cache-dir", default="outputs/cache")
    scores.add_argument("--out", required=True)
    lds = commands.add_parser("lds", help="linear datamodeling score per estimator, from retraining on subsets")
    lds.add_argument("--model", default="tiny_llama")
    lds.add_argument("--method", default="full", choices=["full", "lora"])
    lds.add_argument("--seq-len", type=int, default=256)
    lds.add_argument("--n-train", type=int, default=64)
    lds.add_argument("--n-queries", type=int, default=16)
    lds.add_argument("--n-subsets", type=int, default=32)
    lds.add_argument("--subset-fraction", type=float, default=0.5)
    lds.add_argument("--epochs", type=float, default=6)
    lds.add_argument("--lr", type=float, default=3e-3)
    lds.add_argument("--seed", type=int, default=0)
    lds.add_argument("--data-seed", type=int, default=7)
    lds.add_argument("--estimators", nargs="+", default=["grad_dot", "grad_cos", "proj_fisher", "logra", "kfac"])
    lds.add_argument("--ks", type=int, nargs="*", default=[256, 1024, 4096, 16384])
    lds.add_argument("--dampings", type=float, nargs="*", default=[0.01, 0.1, 0.3, 1.0, 3.0, 10.0])
    lds.add_argument("--cache-dir", default="outputs/cache")
    lds.add_argument("--out", required=True)
    flaws = commands.add_parser("flaws", help="flaw detection per strategy and flaw kind, for one job config")
    flaws.add_argument(
        "--strategies",
        nargs="+",
        default=["random", "perplexity", "embedding", "self_influence", "low_benefit", "high_harm", "combined"],
    )
    flaws.add_argument("--out", required=True)
    flaws.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweeps=cpu_demo scorer_epochs=6")
    e2e = commands.add_parser("e2e", help="wall time of a whole sweep from an empty cache, per stage")
    e2e.add_argument("--sweep", default="cpu_demo")
    e2e.add_argument("--work-dir", default="outputs/bench/e2e", help="its sweep and cache (emptied first)")
    e2e.add_argument("--reuse", action="store_true", help="keep the work dir's cache (time what is left)")
    e2e.add_argument("--goal-s", type=float, default=1800.0)
    e2e.add_argument("--out", required=True)
    e2e.add_argument("overrides", nargs="*", help="Hydra overrides for every job, e.g. dataset.n_train=64")
    args = parser.parse_args(argv)
    result = {
        "features": bench_features,
        "scores": bench_scores,
        "lds": bench_lds,
        "flaws": bench_flaws,
        "e2e": bench_e2e,
    }[args.command](args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
