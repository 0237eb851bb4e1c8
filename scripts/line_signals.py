"""Per-line influence signals: how estimator.loss_weighting=step_mean was chosen (docs/history.md).

    .venv/bin/python scripts/line_signals.py [HYDRA OVERRIDES]     # default: the CPU demo's job config

Reuses the demo's theta* (3 epochs) and its training features from the cache, then takes one
gradient feature per *line* of every training trace (the line's mean token loss, on the input cut
after the line: one backward pass per line, about 11 minutes for the 128 traces here) and prints
the flaw AUROC of ways to turn them into one score per trace: θ*'s per-line losses (no gradients),
per-line self-influence aggregated by max / mean / last line, and self-influence of the sum and of
the mean of the lines' gradients (the mean is the step-balanced loss that step_mean computes in one
backward pass). Writes outputs/flaw/lines_<overrides>.json.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ifexp.cli import compose_job
from ifexp.influence.estimator import make_estimator_preconditioner, make_projector
from ifexp.influence.features import extract_features, read_store
from ifexp.influence.score import self_influence
from ifexp.models import Checkpoint, load_for_gradients, load_tokenizer
from ifexp.selection import flaw_aurocs
from ifexp.stages.base_model import prepare_model
from ifexp.stages.dataset import build_dataset
from ifexp.stages.features import build_features
from ifexp.stages.sft import build_sft
from ifexp.train import collate, encode_examples, line_break_ids, step_spans


def main(overrides: list[str]) -> None:
    cfg = compose_job(["sweeps=cpu_demo", "logger=none", *overrides], check=True)
    cfg = replace(cfg, estimator=replace(cfg.estimator, loss_weighting="token_mean"))
    cache = Path(cfg.paths.cache_dir)
    train = build_dataset(cfg.dataset, cache).train
    base = prepare_model(cfg.model, cache)
    scorer_train = replace(cfg.train, epochs=cfg.scorer_epochs)
    theta = build_sft(cache, base, train, cfg.model, scorer_train, cfg.scorer_seed, cfg.compute)
    theta_star = Checkpoint(base, theta, cfg.train.method)
    store = build_features(cache, cfg.estimator, cfg.model, theta_star, train, "train", cfg.compute)
    traces = np.array(read_store(store)[1], np.float32)
    tokenizer = load_tokenizer(base)
    step_ends = line_break_ids(tokenizer)
    encoded = encode_examples(tokenizer, train, cfg.model, "truncate")
    rows, owner, is_last = [], [], []
    for index, (ids, n_prompt) in enumerate(encoded.rows()):
        spans = step_spans(ids[n_prompt:], step_ends)
        for number, (start, stop) in enumerate(spans):
            rows.append((ids[: n_prompt + stop], n_prompt + start))  # causal: the cut changes no loss of the line
            owner.append(index)
            is_last.append(number == len(spans) - 1)
    owner, is_last = np.array(owner), np.array(is_last)
    model = load_for_gradients(theta_star.model_path, theta_star.adapter)
    lines, line_losses = extract_features(
        model,
        rows,
        make_projector(cfg.estimator, model),
        lambda b: collate(b, tokenizer.pad_token_id),
        cfg.estimator.batch_size,
        desc="features [lines]",
    )

    flaws = [e.flaw for e in train]
    results: dict = {"n_lines": len(rows)}

    def report(name: str, removal: np.ndarray) -> None:
        aurocs = {kind: round(value, 3) for kind, value in flaw_aurocs(removal, flaws).items()}
        results[name] = {"auroc": aurocs.pop("all"), **aurocs}
        print(f"{name:45s} {results[name]}", flush=True)

    def per_trace(values: np.ndarray, how: str) -> np.ndarray:
        if how == "max":
            out = np.full(len(train), -np.inf)
            np.maximum.at(out, owner, values)
            return out
        if how == "last":
            out = np.zeros(len(train))
            out[owner[is_last]] = values[is_last]
            return out
        return np.bincount(owner, values) / np.bincount(owner)

    def fitted_self_influence(features: np.ndarray) -> np.ndarray:
        preconditioner = make_estimator_preconditioner(cfg.estimator).fit(torch.from_numpy(features))
        return self_influence(features, preconditioner)

    for how in ("max", "mean", "last"):
        report(f"theta* loss of the lines, {how}", per_trace(line_losses.astype(np.float64), how))
    report("self-influence of the trace (token_mean)", fitted_self_influence(traces))
    of_lines = fitted_self_influence(lines)
    for how in ("max", "mean", "last"):
        report(f"self-influence of each line, {how}", per_trace(of_lines, how))
    summed = np.zeros_like(traces)
    np.add.at(summed, owner, lines)
    report("self-influence of the sum of line gradients", fitted_self_influence(summed))
    mean = summed / np.bincount(owner)[:, None]
    report("self-influence of the mean of line gradients", fitted_self_influence(mean))
    out = Path("outputs/flaw") / f"lines_{'_'.join(overrides) or 'demo'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
