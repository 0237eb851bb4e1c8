"""Which influence signal finds the injected flawed traces? The exploration behind docs/history.md.

    .venv/bin/python scripts/flaw_signals.py [HYDRA OVERRIDES]          # the demo's theta* (1 epoch)
    .venv/bin/python scripts/flaw_signals.py train.epochs=3             # a better-fit theta*

Builds (or reuses from the cache) the demo's dataset, theta*, its 256 sampled answers, and
gradient features of the training traces, the answers and the validation reference traces;
then prints AUROC (overall and per flaw kind) of each candidate signal, and the query-sample
ablation, and writes them to outputs/flaw/<overrides>.json. ifexp-bench flaws reports the
strategies that ifexp ships; this script also tries the signals it does not ship.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ifexp.cli import compose_job
from ifexp.examples import Problem
from ifexp.influence.estimator import make_estimator_preconditioner
from ifexp.influence.features import read_store
from ifexp.influence.score import influence_matrix, influence_scores, self_influence
from ifexp.models import Checkpoint, load_tokenizer
from ifexp.selection import auroc, flaw_aurocs
from ifexp.stages.base_model import prepare_model
from ifexp.stages.dataset import build_dataset
from ifexp.stages.eval import evaluate, read_generations
from ifexp.stages.features import build_features
from ifexp.stages.perplexity import build_perplexity, read_perplexity
from ifexp.stages.queries import query_examples
from ifexp.stages.sft import build_sft
from ifexp.train import encode_examples

DEMO = ["dataset.n_train=128", "dataset.n_val=64", "train.epochs=1", "train.lr=2e-3", "queries.max_new_tokens=192"]


def main(overrides: list[str]) -> None:
    cfg = compose_job([*DEMO, "logger=none", *overrides], check=True)
    cache = Path(cfg.paths.cache_dir)
    data = build_dataset(cfg.dataset, cache)
    train, val = data.train, data.val
    base = prepare_model(cfg.model, cache)
    theta = Checkpoint(base, build_sft(cache, base, train, cfg.model, cfg.train, cfg.scorer_seed, cfg.compute))
    problems = {"val": [Problem(e.id, e.question, e.answer) for e in val]}
    answers = evaluate(
        cache,
        {"theta": theta},
        problems,
        {"val": cfg.dataset.answer_format},
        cfg.queries,
        cfg.engine,
        cfg.model.system_prompt,
        cfg.scorer_seed,
    )["theta"]["val"]
    queries, correct = query_examples(read_generations(answers))

    def store(examples, name):
        return build_features(cache, cfg.estimator, cfg.model, theta, examples, name, cfg.compute)

    stores = {
        "train": store(train, "train"),
        "references": store(val, "val_references"),
        "queries": store(queries, "queries"),
    }
    train_f, ref_f, query_f = (np.array(read_store(stores[k])[1], dtype=np.float32) for k in stores)
    flawed = np.array([bool(e.flaw) for e in train])
    flaws = [e.flaw for e in train]
    rows: dict = {"|Q_C|": int(correct.sum()), "queries": len(correct)}

    def report(name: str, removal: np.ndarray) -> None:
        aurocs = {kind: round(value, 3) for kind, value in flaw_aurocs(removal, flaws).items()}
        rows[name] = {"auroc": aurocs.pop("all"), **aurocs}
        print(f"{name:45s} {rows[name]}", flush=True)

    perplexity = read_perplexity(build_perplexity(cache, base, cfg.model, train, cfg.estimator.batch_size))
    report("perplexity (base model, high removed)", perplexity)

    def fitted(features: np.ndarray):
        return make_estimator_preconditioner(cfg.estimator).fit(torch.from_numpy(features))

    preconditioner = fitted(train_f)
    on_queries = influence_matrix(train_f, query_f, preconditioner)
    scores = influence_scores(on_queries, correct)
    report("high_harm: s_I", scores["s_incorrect"])
    report("low_benefit: -s_C", -scores["s_correct"])
    report("combined: -(r_C - r_I)", -scores["rank_score"])
    on_references = influence_scores(influence_matrix(train_f, ref_f, preconditioner), np.ones(len(ref_f), bool))
    report("-benefit to validation reference traces", -on_references["s_correct"])
    on_train = influence_matrix(train_f, train_f, preconditioner)
    report("self-influence I(d, d)", np.diag(on_train).copy())
    report("-mean influence on the other traces", -(on_train.sum(1) - np.diag(on_train)) / (len(train_f) - 1))
    # The Fisher estimated from more traces of the same distribution: the clean validation solutions too.
    wider = fitted(np.concatenate([train_f, ref_f]))
    report("self-influence, Fisher on train + references", self_influence(train_f, wider))
    # Training weights an example by its token count (the batch loss is a sum over tokens); an
    # example's feature is the gradient of its mean token loss, so the sum's is n_tokens times it.
    encoded = encode_examples(load_tokenizer(base), train, cfg.model, "truncate")
    n_tokens = np.array([len(ids) - n for ids, n in encoded.rows()], np.float32)
    summed = train_f * n_tokens[:, None]
    report("self-influence of the summed token loss", self_influence(summed, fitted(summed)))
    report("fewest response tokens", -n_tokens)

    sample = np.array([int(q.id.rsplit("/", 1)[1]) for q in queries])
    rows["n_samples"] = {}
    for n in sorted(set(sample + 1)):
        keep = sample < n
        sub = influence_scores(on_queries[:, keep], correct[keep])
        has_correct = bool(correct[keep].any())
        rows["n_samples"][int(n)] = {
            "queries": int(keep.sum()),
            "|Q_C|": int(correct[keep].sum()),
            "high_harm_auroc": round(auroc(sub["s_incorrect"], flawed), 3),
            "low_benefit_auroc": round(auroc(-sub["s_correct"], flawed), 3) if has_correct else None,
            "combined_auroc": round(auroc(-sub["rank_score"], flawed), 3) if has_correct else None,
            "s_incorrect_spearman_vs_all": round(float(spearmanr(sub["s_incorrect"], scores["s_incorrect"])[0]), 3),
        }
        print("samples per question", n, rows["n_samples"][int(n)], flush=True)
    out = Path("outputs/flaw") / f"{'_'.join(overrides) or 'demo'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
