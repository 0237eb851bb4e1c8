"""Influence predicts leave-one-out retraining on a problem small enough to retrain many times.

Tiny Llama + LoRA, 18 training traces, full-batch gradient descent from a fixed start. For
every training example d we retrain without it and measure each query's loss change; removing
a helpful example (I(d, q) > 0) should raise the query's loss, so I(., q) and the loss changes
should rank the examples alike.
"""

import numpy as np
import torch

from ifexp.data import build_splits
from ifexp.influence.capture import per_example_losses, trainable_linears
from ifexp.influence.features import extract_features
from ifexp.influence.precondition import make_preconditioner
from ifexp.influence.project import ExactProjector
from ifexp.influence.score import influence_matrix
from ifexp.models import load_model, load_tokenizer
from ifexp.schema import DatasetConfig, ModelConfig, TrainConfig
from ifexp.train import apply_lora, collate, encode_examples

STEPS, LR = 40, 0.5


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def test_influence_agrees_with_leave_one_out_retraining(tiny_model):
    model_cfg = ModelConfig(name="tiny_llama", source="tiny", max_seq_len=160)
    tokenizer = load_tokenizer(tiny_model)
    splits = build_splits(DatasetConfig(n_train=24, n_val=6, n_test=0, flaw_fraction=0.25))

    def rows_of(examples):
        encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
        return encoded.rows()

    train_rows, query_rows = rows_of(splits["train"]), rows_of(splits["val"])
    assert len(train_rows) >= 15 and len(query_rows) >= 5
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model), model_cfg, TrainConfig(lora_r=4, lora_alpha=8))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_batch = collate(train_rows, tokenizer.pad_token_id)
    query_batch = collate(query_rows, tokenizer.pad_token_id)

    def losses_on(batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return per_example_losses(logits, batch["labels"])

    def train_then_query_losses(weights: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in start:
                    p.copy_(start[n])
        optimizer = torch.optim.SGD([p for n, p in model.named_parameters() if n in start], lr=LR)
        for _ in range(STEPS):
            # sum / n: leaving an example out removes exactly its term
            loss = (losses_on(train_batch) * weights).sum() / len(train_rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return losses_on(query_batch).numpy()

    n = len(train_rows)
    at_optimum = train_then_query_losses(torch.ones(n))
    projector = ExactProjector({k: tuple(m.weight.shape) for k, m in trainable_linears(model).items()})
    train_features, _ = extract_features(model, train_rows, projector, lambda b: collate(b, tokenizer.pad_token_id))
    query_features, _ = extract_features(model, query_rows, projector, lambda b: collate(b, tokenizer.pad_token_id))
    loss_changes = np.stack(
        [train_then_query_losses(torch.ones(n).index_fill(0, torch.tensor([i]), 0.0)) - at_optimum for i in range(n)]
    )

    correlations = {}
    for estimator in ("grad_dot", "grad_cos", "proj_fisher"):
        preconditioner = make_preconditioner(estimator, damping=0.1).fit(torch.from_numpy(train_features))
        influence = influence_matrix(train_features, query_features, preconditioner)
        correlations[estimator] = np.mean(
            [spearman(influence[:, q], loss_changes[:, q]) for q in range(len(query_rows))]
        )
    print("leave-one-out Spearman per estimator:", {k: round(v, 3) for k, v in correlations.items()})
    assert correlations["proj_fisher"] > 0.5
    assert correlations["grad_dot"] > 0.5
