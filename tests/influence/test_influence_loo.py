"""Influence predicts leave-one-out retraining under the loss fine-tuning really optimises.

ifexp.train.finetune minimises the *pooled* response loss of a batch: the sum of the cross-
entropies of its response tokens over their number (train.response_loss_sum), so example d weighs
n_d / N (n_d its response tokens, N the batch's). I(d, q) is built from the gradient of d's *mean*
token loss (DESIGN.md). Retraining without d normalises by N - n_d instead, so a gradient step of
size eta changes the loss on a query q, to first order, by

    loss_q(without d) - loss_q(with d) = eta * n_d / (N - n_d) * (I(d, q) - c_q),
    c_q = sum_d' (n_d' / N) I(d', q)

d's own term, weighted by its share of the tokens, minus the pull of the others, which weigh more
once d is gone. The first test checks that statement on one small step (float64); the second that
after 40 full-batch steps its ranking of the examples agrees with real retraining.
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
from ifexp.schema import DatasetConfig, ModelConfig, TinyModelConfig, TrainConfig
from ifexp.train import apply_lora, collate, encode_examples, response_loss_sum

STEPS, LR = 40, 0.5


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def pooled_removal_prediction(influence: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """(N_train, N_query): the first-order loss change of each query per unit step when d is left out."""
    n_tokens = np.asarray(n_tokens, dtype=np.float64)[:, None]
    influence = np.asarray(influence, dtype=np.float64)
    total = n_tokens.sum()
    pull = (n_tokens * influence).sum(axis=0) / total
    return n_tokens / (total - n_tokens) * (influence - pull)


class Retrainer:
    """A LoRA model reset to one fixed start and trained by full-batch SGD on finetune's pooled loss."""

    def __init__(self, tiny_model: str, model_cfg: ModelConfig, b_std: float, dtype=torch.float32):
        torch.manual_seed(0)
        model = apply_lora(load_model(tiny_model), model_cfg, TrainConfig(lora_r=4, lora_alpha=8))
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero (every A-gradient zero): give it weights as after training
                torch.nn.init.normal_(param, std=b_std)
        self.model = model.to(dtype)
        self.pad_id = load_tokenizer(tiny_model).pad_token_id
        self.start = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def batch(self, rows):
        return collate(rows, self.pad_id)

    def train(self, rows, steps: int, lr: float) -> None:
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in self.start:
                    param.copy_(self.start[name])
        optimizer = torch.optim.SGD([p for n, p in self.model.named_parameters() if n in self.start], lr=lr)
        batch = self.batch(rows)
        for _ in range(steps):
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss_sum, n_tokens = response_loss_sum(logits, batch["labels"])
            loss = loss_sum / n_tokens  # finetune's loss on one batch of all the rows
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def query_losses(self, rows) -> np.ndarray:
        batch = self.batch(rows)
        with torch.no_grad():
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return per_example_losses(logits, batch["labels"]).double().numpy()

    def n_tokens(self, rows) -> np.ndarray:
        """Response tokens per row, counted as response_loss_sum counts them."""
        return (self.batch(rows)["labels"][:, 1:] != -100).sum(dim=1).numpy()

    def features(self, rows) -> np.ndarray:
        projector = ExactProjector({k: tuple(m.weight.shape) for k, m in trainable_linears(self.model).items()})
        return extract_features(self.model, rows, projector, self.batch)[0]


def test_one_pooled_step_changes_query_losses_as_influence_predicts(tiny_model, tiny_model_cfg, small_splits):
    tokenizer = load_tokenizer(tiny_model)
    rows = encode_examples(tokenizer, small_splits["train"], tiny_model_cfg, "truncate").rows()
    by_length = sorted(rows, key=lambda row: len(row[0]) - row[1])
    train_rows = by_length[:: len(by_length) // 5][:6]  # the shortest to the longest responses
    query_rows = encode_examples(tokenizer, small_splits["val"][:3], tiny_model_cfg, "truncate").rows()
    # float64 so that a small step's loss change is far above rounding error
    retrainer = Retrainer(tiny_model, tiny_model_cfg, b_std=0.05, dtype=torch.float64)
    n_tokens = retrainer.n_tokens(train_rows)
    retrainer.train(train_rows, 0, 0.0)
    features = retrainer.features(train_rows), retrainer.features(query_rows)
    influence = influence_matrix(*features, make_preconditioner("grad_dot"))

    step = 1e-2
    retrainer.train(train_rows, 1, step)
    with_all = retrainer.query_losses(query_rows)
    changes = []
    for i in range(len(train_rows)):
        retrainer.train(train_rows[:i] + train_rows[i + 1 :], 1, step)
        changes.append(retrainer.query_losses(query_rows) - with_all)
    changes = np.stack(changes)
    predicted = step * pooled_removal_prediction(influence, n_tokens)
    tolerance = 0.05 * np.abs(predicted).max()
    np.testing.assert_allclose(changes, predicted, rtol=0, atol=tolerance)
    # the per-example-mean objective's prediction (every d weighs 1/n, no renormalisation) does not hold
    per_example_mean = step * influence / len(train_rows)
    assert np.abs(changes - per_example_mean).max() > 4 * tolerance


def test_influence_agrees_with_leave_one_out_retraining(tiny_model):
    model_cfg = ModelConfig(name="tiny_llama", source="tiny", tiny=TinyModelConfig(), max_seq_len=160)
    tokenizer = load_tokenizer(tiny_model)
    splits = build_splits(DatasetConfig(n_train=24, n_val=6, n_test=0, flaw_fraction=0.25))

    def rows_of(examples):
        encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
        return encoded.rows()

    train_rows, query_rows = rows_of(splits["train"]), rows_of(splits["val"])
    assert len(train_rows) >= 15 and len(query_rows) >= 5
    retrainer = Retrainer(tiny_model, model_cfg, b_std=0.02)
    retrainer.train(train_rows, STEPS, LR)  # theta*
    at_optimum = retrainer.query_losses(query_rows)
    train_features, query_features = retrainer.features(train_rows), retrainer.features(query_rows)
    n_tokens = retrainer.n_tokens(train_rows)
    loss_changes = []
    for i in range(len(train_rows)):  # retrain exactly as finetune would on the batch without d
        retrainer.train(train_rows[:i] + train_rows[i + 1 :], STEPS, LR)
        loss_changes.append(retrainer.query_losses(query_rows) - at_optimum)
    loss_changes = np.stack(loss_changes)

    correlations = {}
    for estimator in ("grad_dot", "grad_cos", "proj_fisher"):
        preconditioner = make_preconditioner(estimator, damping=0.1).fit(torch.from_numpy(train_features))
        influence = influence_matrix(train_features, query_features, preconditioner)
        predicted = pooled_removal_prediction(influence, n_tokens)
        correlations[estimator] = np.mean(
            [spearman(predicted[:, q], loss_changes[:, q]) for q in range(len(query_rows))]
        )
    print("leave-one-out Spearman per estimator:", {k: round(v, 3) for k, v in correlations.items()})
    assert correlations["proj_fisher"] > 0.5
    assert correlations["grad_dot"] > 0.5
