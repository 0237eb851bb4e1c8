"""`ifexp-bench lds`: the linear datamodeling score of each estimator (quality, not speed).

    ifexp-bench lds --model tiny_llama --out lds.json

Fine-tunes on all N training traces, scores them against held-out queries with each estimator
(+ k and damping ablations of proj_fisher, and exact unprojected gradients), retrains on M
random subsets, and reports the Spearman correlation of predicted and actual query losses.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Benchmark, device, load_group, on_device, option, padded
from ifexp.schema import DatasetConfig, EstimatorConfig, ModelConfig, TrainConfig


def load_trained(base: str, method: str, out_dir: Path):
    """A fine-tuned model ready for gradients: the LoRA matrices (or every weight) trainable."""
    from ifexp.models import load_for_gradients

    weights = str(out_dir / "weights")
    model = load_for_gradients(weights) if method == "full" else load_for_gradients(base, adapter=weights)
    return model.to(device())


def query_losses(model, rows: list, pad: int, batch_size: int = 16) -> np.ndarray:
    from ifexp.influence.capture import per_example_losses

    collate_fn = padded(pad)
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = on_device(collate_fn(rows[start : start + batch_size]))
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses.append(per_example_losses(logits, batch["labels"]).cpu().numpy())
    return np.concatenate(losses)


@dataclass(kw_only=True)
class Lds(Benchmark):
    """linear datamodeling score per estimator, from retraining on subsets"""

    model: str = option("tiny_llama")
    # gsm_symbolic: generated traces, queries held out; leg_counting: the competent regime's
    # training traces (conf/dataset/leg_counting.yaml's flaw mix, data seed) and its validation
    # problems' clean traces as the queries
    dataset: str = option("gsm_symbolic", choices=["gsm_symbolic", "leg_counting"])
    # leg_counting's flaws; unset: conf/dataset/leg_counting.yaml's (its default mix changes over time)
    flaw_fraction: float | None = option(None, help="leg_counting: fraction of flawed training traces")
    flaw_kinds: list[str] = option([], nargs="*", help="leg_counting: flaw kinds (ifexp.tasks)")
    method: str = option("full", choices=["full", "lora"])
    seq_len: int = option(256)
    n_train: int = option(64)
    n_queries: int = option(16)
    n_subsets: int = option(32)
    subset_fraction: float = option(0.5)
    epochs: float = option(6)
    lr: float = option(3e-3)
    seed: int = option(0)
    # leg_counting: a data seed (a fresh draw per value since d8d510f); gsm_symbolic: reasoning-gym's
    # generator seed, as when the LDS numbers in docs/results.md were measured (consecutive values
    # draw the same examples shifted by one: tasks.SEED_BLOCK)
    data_seed: int = option(7)
    estimators: list[str] = option(["grad_dot", "grad_cos", "proj_fisher", "logra", "kfac"])
    ks: list[int] = option([256, 1024, 4096, 16384], nargs="*")
    dampings: list[float] = option([0.01, 0.1, 0.3, 1.0, 3.0, 10.0], nargs="*")
    cache_dir: str = option("outputs/cache")

    def examples(self) -> tuple[list, list]:
        """(training traces, query traces) of --dataset."""
        if self.dataset == "leg_counting":
            from ifexp.tasks import leg_counting_splits

            cfg = replace(
                load_group("dataset", "leg_counting", DatasetConfig),
                n_train=self.n_train,
                n_val=self.n_queries,
                n_test=0,
                data_seed=self.data_seed,
            )
            if self.flaw_fraction is not None:
                cfg = replace(cfg, flaw_fraction=self.flaw_fraction)
            if self.flaw_kinds:
                cfg = replace(cfg, flaw_kinds=list(self.flaw_kinds))
            train, queries, _ = leg_counting_splits(cfg)
            return train, queries
        from ifexp.data import gsm_symbolic_examples

        examples = gsm_symbolic_examples(self.n_train + self.n_queries, seed=self.data_seed)
        return examples[: self.n_train], examples[self.n_train :]

    def execute(self) -> dict:
        """LDS per estimator (+ k and damping ablations of proj_fisher) from M retrainings on subsets."""
        from tqdm.auto import tqdm

        from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
        from ifexp.influence.features import extract_features
        from ifexp.influence.lds import linear_datamodeling_score, predicted_losses, subset_masks
        from ifexp.influence.score import influence_matrix
        from ifexp.models import load_tokenizer
        from ifexp.stages.base_model import prepare_model
        from ifexp.train import encode_examples, finetune

        started = time.perf_counter()
        model_cfg = replace(load_group("model", self.model, ModelConfig), max_seq_len=self.seq_len)
        base = prepare_model(model_cfg, self.cache_dir)
        train_cfg = replace(
            load_group("train", self.method, TrainConfig), epochs=self.epochs, lr=self.lr, lora_dropout=0.0
        )
        tokenizer = load_tokenizer(base)
        train, queries = self.examples()
        encoded = encode_examples(tokenizer, train + queries, model_cfg, "truncate")
        if encoded.n_rejected:
            raise SystemExit(f"ifexp-bench: error: {encoded.n_rejected} prompts exceed --seq-len {self.seq_len}")
        rows = encoded.rows()
        train_rows, query_rows = rows[: self.n_train], rows[self.n_train :]
        pad = tokenizer.pad_token_id
        collate_fn = padded(pad)

        with tempfile.TemporaryDirectory(prefix="ifexp-lds-") as work:
            # fine-tuning truncates exactly as encode_examples did above (train_cfg.overlong = truncate)
            full = finetune(base, train, model_cfg, train_cfg, self.seed, Path(work) / "full")
            model = load_trained(base, self.method, Path(work) / "full")

            def influence_of(est: EstimatorConfig) -> np.ndarray:
                projector = make_projector(est, model)
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

            estimators = {name: load_group("estimator", name, EstimatorConfig) for name in self.estimators}
            proj_fisher = estimators.get("proj_fisher", load_group("estimator", "proj_fisher", EstimatorConfig))
            influences = {name: influence_of(est) for name, est in estimators.items()}
            influences["exact_grad_dot"] = influence_of(
                replace(estimators.get("grad_dot", proj_fisher), projection="none", preconditioner="grad_dot")
            )
            k_ablation = {k: influence_of(replace(proj_fisher, k=k)) for k in self.ks}
            damping_ablation = {d: influence_of(replace(proj_fisher, damping=d)) for d in self.dampings}

            masks = subset_masks(self.n_train, self.n_subsets, self.subset_fraction, seed=self.seed)
            actual = np.empty((self.n_subsets, len(query_rows)))
            for m, mask in enumerate(tqdm(masks, desc="retrain on subsets")):
                subset = [e for e, keep in zip(train, mask, strict=True) if keep]
                out = Path(work) / f"subset{m}"
                finetune(base, subset, model_cfg, train_cfg, self.seed, out)
                actual[m] = query_losses(load_trained(base, self.method, out), query_rows, pad)
                shutil.rmtree(out)

        def lds(influence: np.ndarray) -> float:
            return round(linear_datamodeling_score(predicted_losses(influence, masks), actual), 4)

        return {
            "model": self.model,
            "dataset": self.dataset,
            "n_flawed_train": sum(bool(e.flaw) for e in train),
            "flaw_kinds_train": sorted({e.flaw for e in train if e.flaw}),
            "method": self.method,
            "n_train": self.n_train,
            "n_queries": len(query_rows),
            "n_subsets": self.n_subsets,
            "subset_fraction": self.subset_fraction,
            "epochs": self.epochs,
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
