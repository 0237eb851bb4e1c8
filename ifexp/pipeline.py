"""One job of the paper's loop, as a chain of cached stages (DESIGN.md):

    dataset -> base_model -> sft_full (theta*) -> queries (theta* answers V; graded: Q_C, Q_I)
      -> features(D), features(Q) -> scores -> [perplexity | embedding] -> selection
      -> sft_pruned, and Random's sft_pruned at the same size and seed -> eval -> delta vs Random

Every stage's artifact lives in the content-addressed cache (ifexp.cache): written into a temp
folder, renamed into place, guarded by a file lock, described by a manifest. A sweep therefore
trains theta* and extracts gradients once, and a killed job resumes from its last finished stage.
Selection is a pure function of cached signals and is recomputed (in milliseconds) every time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ifexp.cache import cached_stage, content_hash, file_hash, read_manifest
from ifexp.data import Example, build_splits, read_jsonl, write_jsonl
from ifexp.distributed import run_sharded
from ifexp.evaluate.benchmarks import Problem, load_benchmark
from ifexp.evaluate.engines import GenerationJob, generate
from ifexp.evaluate.grading import is_correct, pass_at_1
from ifexp.models import load_for_gradients, load_tokenizer, prepare_model, prompt_ids
from ifexp.schema import EstimatorConfig, IfexpError, JobConfig, ModelConfig, PruningConfig, TrainConfig, validate
from ifexp.selection import Signals, flaw_detection, needed_signals, removal_scores, select
from ifexp.train import collate, encode_examples, finetune, line_break_ids

log = logging.getLogger(__name__)


@contextmanager
def timed(timings: dict[str, float], stage: str):
    started = time.time()
    yield
    timings[f"time/{stage}_s"] = round(timings.get(f"time/{stage}_s", 0.0) + time.time() - started, 2)


def artifact_id(path: str) -> str:
    """The identity of a model reference: a cache artifact's hash, or a hub id."""
    return Path(path).name if Path(path).is_dir() else path


def examples_hash(examples: list[Example]) -> str:
    return content_hash([asdict(e) for e in examples])


# ---------------------------------------------------------------------------------------------
# Stages (each returns its artifact folder in the cache)


def dataset_stage(cfg: JobConfig, cache_dir: Path) -> tuple[Path, dict[str, list[Example]]]:
    key = {"dataset": asdict(cfg.dataset)}
    if cfg.dataset.source == "jsonl":
        # A user's file is identified by its content, not its name.
        key["files"] = [file_hash(p) for p in (cfg.dataset.path, cfg.dataset.val_path) if p]

    def build(out: Path) -> dict:
        splits = build_splits(cfg.dataset)
        for split, examples in splits.items():
            write_jsonl(out / f"{split}.jsonl", examples)
        return {"sizes": {split: len(examples) for split, examples in splits.items()}}

    folder = cached_stage(cache_dir, "dataset", key, build)
    splits = {
        s: read_jsonl(folder / f"{s}.jsonl") if (folder / f"{s}.jsonl").stat().st_size else []
        for s in ("train", "val", "test")
    }
    return folder, splits


def sft_stage(
    cfg: JobConfig,
    cache_dir: Path,
    model_cfg: ModelConfig,
    base: str,
    train: list[Example],
    seed: int,
    train_cfg: TrainConfig | None = None,
) -> Path:
    """Fine-tune base on exactly these examples with this seed (theta*, or a pruned model).

    train_cfg defaults to cfg.train (theta* may train longer: scorer_epochs).
    """
    train_cfg = train_cfg or cfg.train
    key = {
        "base": artifact_id(base),
        "data": examples_hash(train),
        "train": asdict(train_cfg),
        "max_seq_len": model_cfg.max_seq_len,
        "system_prompt": model_cfg.system_prompt,
        "lora_targets": list(model_cfg.lora_targets),
        "seed": seed,
    }
    kwargs = dict(base_path=base, examples=train, model_cfg=model_cfg, train_cfg=train_cfg, seed=seed)
    return cached_stage(
        cache_dir,
        "sft",
        key,
        lambda out: run_sharded(finetune, {**kwargs, "out_dir": out}, cfg.compute.num_processes, cfg.compute.launcher),
    )


def model_under_test(cfg: JobConfig, base: str, sft_dir: Path | None) -> tuple[str, str | None]:
    """(model path, LoRA adapter) of the base model (sft_dir None) or of a fine-tuned one."""
    if sft_dir is None:
        return base, None
    if cfg.train.method == "lora":
        return base, str(sft_dir / "weights")
    return str(sft_dir / "weights"), None


def eval_stage(
    cfg: JobConfig,
    cache_dir: Path,
    models: dict[str, tuple[str, str | None]],
    benchmarks: dict[str, list[Problem]],
    sampling: dict[str, Any],
    system_prompt: str | None,
    seed: int,
) -> dict[str, dict[str, Path]]:
    """Generate and grade every (model, benchmark) pair not in the cache yet, in one engine call."""
    keys: dict[tuple[str, str], dict[str, Any]] = {}
    for model_name, (model_path, adapter) in models.items():
        for bench, problems in benchmarks.items():
            keys[model_name, bench] = {
                "model": artifact_id(model_path),
                "adapter": Path(adapter).parent.name if adapter else None,
                "benchmark": bench,
                "problems": content_hash([asdict(p) for p in problems]),
                "system_prompt": system_prompt,
                "sampling": sampling,
                "engine": {"name": cfg.engine.name, "dtype": cfg.engine.dtype},
                "seed": seed if sampling["temperature"] > 0 else 0,  # greedy output does not depend on it
            }
    digests = {pair: content_hash(key) for pair, key in keys.items()}
    # one generation per distinct artifact (the Random job's pruned model is also its Random model)
    missing: dict[str, tuple[str, str]] = {}
    for pair, digest in digests.items():
        if digest not in missing and not (cache_dir / "eval" / digest / "manifest.json").is_file():
            missing[digest] = pair
    samples: dict[str, list] = {}
    generation_s = 0.0
    if missing:
        tokenizer = load_tokenizer(next(iter(models.values()))[0])
        prompts = {
            bench: [prompt_ids(tokenizer, p.question, system_prompt) for p in problems]
            for bench, problems in benchmarks.items()
        }
        jobs = [
            GenerationJob(digest, *models[model_name], prompts[bench], seed=seed, **sampling)
            for digest, (model_name, bench) in missing.items()
        ]
        started = time.time()
        samples = generate(cfg.engine, jobs)
        generation_s = round((time.time() - started) / len(jobs), 2)  # one engine call shared by all jobs

    def writer(bench: str, digest: str):
        def build(out: Path) -> dict:
            graded = []
            with (out / "generations.jsonl").open("w") as handle:
                for problem, problem_samples in zip(benchmarks[bench], samples[digest], strict=True):
                    correct = [is_correct(s.text, problem.answer) for s in problem_samples]
                    graded.append(correct)
                    record = {**asdict(problem), "responses": [s.text for s in problem_samples], "correct": correct}
                    handle.write(json.dumps(record) + "\n")
            return {"pass@1": pass_at_1(graded), "n_problems": len(graded), "generation_s": generation_s}

        return build

    return {
        model_name: {
            bench: cached_stage(cache_dir, "eval", keys[model_name, bench], writer(bench, digests[model_name, bench]))
            for bench in benchmarks
        }
        for model_name in models
    }


def read_generations(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]


def query_examples(generations: list[dict]) -> tuple[list[Example], np.ndarray]:
    """theta*'s own answers to the validation questions as (question, response) examples + grades."""
    queries, correct = [], []
    for record in generations:
        for j, (response, ok) in enumerate(zip(record["responses"], record["correct"], strict=True)):
            queries.append(Example(f"{record['id']}/{j}", record["question"], response, record["answer"]))
            correct.append(ok)
    return queries, np.asarray(correct, dtype=bool)


def features_stage(
    cfg: JobConfig,
    cache_dir: Path,
    model_cfg: ModelConfig,
    base: str,
    sft_dir: Path,
    examples: list[Example],
    split_key: str,
) -> Path:
    """Projected gradient features of examples at theta*, in a memmap store, reused by every job.

    Keyed by the weights (sft artifact), the examples' content and the projection config; the
    preconditioner is not part of the key, so all estimators sharing a projection share it.
    """
    est = cfg.estimator
    key = {
        "sft": sft_dir.name,
        "examples": examples_hash(examples),
        "split": split_key,
        "projection": {
            k: getattr(est, k) for k in ("projection", "k", "k_in", "k_out", "seed", "store_dtype", "compute_dtype")
        },
        "max_seq_len": model_cfg.max_seq_len,
        "system_prompt": model_cfg.system_prompt,
    }
    if est.loss_weighting != "token_mean":  # in the key only when set: older stores keep their keys
        key["loss_weighting"] = est.loss_weighting

    model_path, adapter = model_under_test(cfg, base, sft_dir)
    kwargs = dict(
        est=est, model_cfg=model_cfg, model_path=model_path, adapter=adapter, examples=examples, split_key=split_key
    )
    return cached_stage(
        cache_dir,
        "features",
        key,
        lambda out: run_sharded(
            extract_feature_store, {**kwargs, "out": out}, cfg.compute.num_processes, cfg.compute.launcher
        ),
    )


def extract_feature_store(
    est: EstimatorConfig,
    model_cfg: ModelConfig,
    model_path: str,
    adapter: str | None,
    examples: list[Example],
    split_key: str,
    out: Path,
) -> dict:
    """The features stage's work; in a multi-process run every process extracts a shard, rank 0 writes."""
    import torch

    from ifexp.distributed import rank_and_world
    from ifexp.influence.estimator import make_projector
    from ifexp.influence.features import NonFiniteFeatures, extract_features, write_store

    tokenizer = load_tokenizer(model_path)
    encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
    if encoded.n_rejected:
        raise IfexpError(f"features: {encoded.n_rejected} examples have prompts longer than model.max_seq_len")
    model = load_for_gradients(model_path, adapter)
    if torch.cuda.is_available():  # one GPU per process (LOCAL_RANK is set by torchrun / srun workers)
        model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    rows = encoded.rows()
    projector = make_projector(est, model)
    step_ends = line_break_ids(tokenizer) if est.loss_weighting == "step_mean" else None
    try:
        features, losses = extract_features(
            model,
            rows,
            projector,
            lambda b: collate(b, tokenizer.pad_token_id, step_ends),
            est.batch_size,
            desc=f"features [{split_key}]",
            compute_dtype=est.compute_dtype,
        )
    except NonFiniteFeatures as error:  # NaN/Inf gradients: name the example, keep nothing
        raise IfexpError(f"features [{split_key}]: {error} ({examples[error.index].id})") from None
    if rank_and_world()[0] == 0:
        write_store(out, [e.id for e in examples], features, est.store_dtype, projector)
    return {"n": len(examples), "k": projector.k, "n_truncated": encoded.n_truncated, "mean_loss": float(losses.mean())}


def scores_stage(cfg: JobConfig, cache_dir: Path, train_store: Path, query_store: Path, correct: np.ndarray) -> Path:
    """I(d, q) for every training example and query, and the s_C / s_I / rank scores."""
    est = cfg.estimator
    key = {
        **scores_key(cfg, train_store),
        "queries": query_store.name,
        "correct": content_hash(correct.astype(int).tolist()),
        "query_rank": est.query_rank,
    }

    def build(out: Path) -> dict:
        from ifexp.influence.features import read_store
        from ifexp.influence.score import influence_matrix, influence_scores

        preconditioner, train_features = fitted_preconditioner(cfg, train_store)
        _, query_features = read_store(query_store)
        influence = influence_matrix(train_features, query_features, preconditioner, query_rank=est.query_rank)
        np.save(out / "influence.npy", influence)
        np.savez(out / "scores.npz", correct=correct, **influence_scores(influence, correct))
        return {"n_train": influence.shape[0], "n_correct": int(correct.sum()), "n_incorrect": int((~correct).sum())}

    return cached_stage(cache_dir, "scores", key, build)


def scores_key(cfg: JobConfig, train_store: Path) -> dict[str, Any]:
    est = cfg.estimator
    return {
        "train": train_store.name,
        "preconditioner": est.preconditioner,
        "damping": est.damping,
        # lambda = damping x mean non-zero eigenvalue (was: x mean eigenvalue): scores differ
        "damping_scale": "nonzero_mean",
    }


def fitted_preconditioner(cfg: JobConfig, train_store: Path):
    import torch

    from ifexp.influence.estimator import make_estimator_preconditioner
    from ifexp.influence.features import read_kfac_factors, read_store

    _, train_features = read_store(train_store)
    preconditioner = make_estimator_preconditioner(cfg.estimator, read_kfac_factors(train_store))
    return preconditioner.fit(torch.tensor(np.asarray(train_features), dtype=torch.float32)), train_features


def self_influence_stage(cfg: JobConfig, cache_dir: Path, train_store: Path) -> Path:
    """I(d, d) for every training example: how much a step on d lowers d's own loss."""

    def build(out: Path) -> dict:
        from ifexp.influence.score import self_influence

        preconditioner, train_features = fitted_preconditioner(cfg, train_store)
        values = self_influence(train_features, preconditioner)
        np.save(out / "self_influence.npy", values)
        return {"n_train": len(values), "mean": float(values.mean())}

    return cached_stage(cache_dir, "self_influence", scores_key(cfg, train_store), build)


def perplexity_stage(cfg: JobConfig, cache_dir: Path, base: str, train: list[Example]) -> Path:
    """Perplexity of each training example under the (trainee's) base model."""
    key = {
        "base": artifact_id(base),
        "examples": examples_hash(train),
        "max_seq_len": cfg.model.max_seq_len,
        "system_prompt": cfg.model.system_prompt,
    }

    def build(out: Path) -> dict:
        from ifexp.signals import perplexities

        values = perplexities(base, train, cfg.model, cfg.estimator.batch_size)
        np.save(out / "perplexity.npy", values)
        return {"n": len(values), "median": float(np.median(values))}

    return cached_stage(cache_dir, "perplexity", key, build)


def embedding_stage(cfg: JobConfig, cache_dir: Path, train: list[Example], val: list[Example]) -> Path:
    """The embedding baseline's removal score (all-MiniLM-L6-v2)."""
    mode = cfg.pruning.embedding_mode
    key = {"train": examples_hash(train), "val": examples_hash(val), "mode": mode, "encoder": "all-MiniLM-L6-v2"}

    def build(out: Path) -> dict:
        from ifexp.signals import centroid_distance, embed, redundancy

        if mode == "centroid":
            if not val:
                raise IfexpError("pruning=embedding with embedding_mode=centroid needs validation questions")
            score = centroid_distance(embed([e.question for e in train]), embed([e.question for e in val]))
        else:
            score = redundancy(embed([f"{e.question}\n{e.cot}" for e in train]))
        np.save(out / "embedding.npy", score)
        return {"n": len(score), "mode": mode}

    return cached_stage(cache_dir, "embedding", key, build)


# ---------------------------------------------------------------------------------------------
# The job


def load_benchmarks(cfg: JobConfig, splits: dict[str, list[Example]]) -> dict[str, list[Problem]]:
    in_domain = splits["test"] if cfg.dataset.source == "gsm_symbolic" else None
    return {
        name: load_benchmark(name, cfg.eval.max_examples, cfg.eval.benchmark_seed, in_domain)
        for name in cfg.eval.benchmarks
    }


def compute_signals(
    cfg: JobConfig,
    cache_dir: Path,
    splits: dict[str, list[Example]],
    base: str,
    needs: set[str],
    timings: dict[str, float],
    metrics: dict[str, Any],
) -> tuple[Signals, dict[str, Path]]:
    """What the strategy ranks by: influence scores from theta*, perplexity, or embeddings."""
    train = splits["train"]
    signals = Signals(ids=[e.id for e in train], flaw=[e.flaw for e in train])
    artifacts: dict[str, Path] = {}
    if needs & {"influence", "self_influence"}:
        scorer_cfg = cfg.scorer or cfg.model
        with timed(timings, "base_model"):
            scorer_base = base if cfg.scorer is None else prepare_model(scorer_cfg, cache_dir)
        with timed(timings, "sft_full"):
            scorer_train = cfg.train if cfg.scorer_epochs is None else replace(cfg.train, epochs=cfg.scorer_epochs)
            artifacts["sft_full"] = sft_stage(
                cfg, cache_dir, scorer_cfg, scorer_base, train, cfg.scorer_seed, scorer_train
            )
        metrics.update(
            {
                f"theta_star/{k}": v
                for k, v in read_manifest(artifacts["sft_full"]).items()
                if k in ("final_loss", "steps")
            }
        )
        with timed(timings, "features"):
            artifacts["features_train"] = features_stage(
                cfg, cache_dir, scorer_cfg, scorer_base, artifacts["sft_full"], train, "train"
            )
        with timed(timings, "scores"):
            artifacts["self_influence"] = self_influence_stage(cfg, cache_dir, artifacts["features_train"])
        signals.self_influence = np.load(artifacts["self_influence"] / "self_influence.npy")
        needs = needs | {"perplexity"}  # scores.csv carries the perplexity column too
    if "influence" in needs:
        with timed(timings, "queries"):
            val = [Problem(e.id, e.question, e.answer) for e in splits["val"]]
            if not val:
                raise IfexpError("influence scores need validation questions: dataset.n_val is 0")
            sampling = asdict(cfg.queries)
            scorer_model = {"theta_star": model_under_test(cfg, scorer_base, artifacts["sft_full"])}
            artifacts["queries"] = eval_stage(
                cfg, cache_dir, scorer_model, {"val": val}, sampling, scorer_cfg.system_prompt, cfg.scorer_seed
            )["theta_star"]["val"]
            queries, correct = query_examples(read_generations(artifacts["queries"]))
        n_correct, n_incorrect = int(correct.sum()), int((~correct).sum())
        metrics.update({"queries/n_correct": n_correct, "queries/n_incorrect": n_incorrect})
        metrics["queries/pass@1"] = read_manifest(artifacts["queries"])["pass@1"]
        if n_correct == 0 or n_incorrect == 0:
            log.warning(
                "query sets: |Q_C| = %d, |Q_I| = %d; the empty side's scores are left empty (NaN)",
                n_correct,
                n_incorrect,
            )
        with timed(timings, "features"):
            query_store = features_stage(
                cfg, cache_dir, scorer_cfg, scorer_base, artifacts["sft_full"], queries, "queries"
            )
        with timed(timings, "scores"):
            artifacts["scores"] = scores_stage(cfg, cache_dir, artifacts["features_train"], query_store, correct)
        artifacts["features_queries"] = query_store
        with np.load(artifacts["scores"] / "scores.npz") as saved:
            for name in ("s_correct", "s_incorrect", "rank_correct", "rank_incorrect"):
                setattr(signals, name, saved[name])
        signals.n_correct_queries, signals.n_incorrect_queries = n_correct, n_incorrect
    if "perplexity" in needs:
        with timed(timings, "perplexity"):
            artifacts["perplexity"] = perplexity_stage(cfg, cache_dir, base, train)
        signals.perplexity = np.load(artifacts["perplexity"] / "perplexity.npy")
    if "embedding" in needs:
        with timed(timings, "embedding"):
            artifacts["embedding"] = embedding_stage(cfg, cache_dir, train, splits["val"])
        signals.embedding = np.load(artifacts["embedding"] / "embedding.npy")
    return signals, artifacts


def write_selection(path: Path, cfg: PruningConfig, seed: int, ids: list[str], kept: np.ndarray) -> None:
    """selection.json (contract): strategy, fraction, seed, kept and removed ids."""
    selection = {
        "strategy": cfg.strategy,
        "fraction": cfg.fraction,
        "seed": seed,
        "options": {k: v for k, v in asdict(cfg).items() if k not in ("strategy", "fraction")},
        "n_kept": int(kept.sum()),
        "n_removed": int((~kept).sum()),
        "kept": [i for i, k in zip(ids, kept, strict=True) if k],
        "removed": [i for i, k in zip(ids, kept, strict=True) if not k],
    }
    path.write_text(json.dumps(selection, indent=2))


def run_job(cfg: JobConfig, run_dir: Path, tracker=None) -> dict[str, Any]:
    """Score, prune, fine-tune on what is kept, evaluate against Random; write the run's outputs."""
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cfg.paths.cache_dir).resolve()
    timings: dict[str, float] = {}
    pruning = cfg.pruning
    metrics: dict[str, Any] = {
        "model": cfg.model.name,
        "scorer": (cfg.scorer or cfg.model).name,
        "dataset": cfg.dataset.name,
        "estimator": cfg.estimator.name,
        "strategy": pruning.strategy,
        "fraction": pruning.fraction,
        "seed": cfg.seed,
    }

    # Data first: a bad input file fails before minutes of model conversion.
    with timed(timings, "dataset"):
        data_dir, splits = dataset_stage(cfg, cache_dir)
    train = splits["train"]
    with timed(timings, "base_model"):
        base = prepare_model(cfg.model, cache_dir)
    with timed(timings, "benchmarks"):
        benchmarks = load_benchmarks(cfg, splits)

    signals, artifacts = compute_signals(
        cfg, cache_dir, splits, base, needed_signals(pruning.strategy), timings, metrics
    )
    ranking = removal_scores(pruning, signals, cfg.seed) if pruning.strategy != "none" else None
    kept = select(pruning, signals, cfg.seed, ranking)
    write_selection(run_dir / "selection.json", pruning, cfg.seed, signals.ids, kept)
    metrics.update(flaw_detection(kept, ranking, signals.flaw))

    # The trainee fine-tuned on what is kept, and on Random's pick of the same size and seed.
    subsets = {"pruned": kept}
    if pruning.compare_random and pruning.strategy != "none":
        subsets["random"] = select(PruningConfig(strategy="random", fraction=pruning.fraction), signals, cfg.seed)
    if cfg.eval.eval_full:
        subsets["full"] = np.ones(len(train), dtype=bool)
    sft_dirs = {}
    for name, mask in subsets.items():
        with timed(timings, f"sft_{name}"):
            sft_dirs[name] = sft_stage(
                cfg, cache_dir, cfg.model, base, [e for e, k in zip(train, mask, strict=True) if k], cfg.seed
            )
    models = {name: model_under_test(cfg, base, folder) for name, folder in sft_dirs.items()}
    if cfg.eval.eval_base:
        models["base"] = model_under_test(cfg, base, None)
    with timed(timings, "eval"):
        sampling = {k: getattr(cfg.eval, k) for k in ("n_samples", "temperature", "max_new_tokens")}
        evals = eval_stage(cfg, cache_dir, models, benchmarks, sampling, cfg.model.system_prompt, cfg.seed)

    generations_dir = run_dir / "generations"
    generations_dir.mkdir(exist_ok=True)
    for model_name, per_bench in evals.items():
        prefix = "" if model_name == "pruned" else f"{model_name}_"
        for bench, folder in per_bench.items():
            metrics[f"{prefix}pass@1/{bench}"] = read_manifest(folder)["pass@1"]
            metrics[f"artifact/eval/{model_name}/{bench}"] = str(folder)
            (generations_dir / f"{model_name}_{bench}.jsonl").write_text((folder / "generations.jsonl").read_text())
    for bench in benchmarks:
        if "random" in models:
            metrics[f"delta_vs_random/{bench}"] = metrics[f"pass@1/{bench}"] - metrics[f"random_pass@1/{bench}"]
        if "base" in models:
            metrics[f"gain_vs_base/{bench}"] = metrics[f"pass@1/{bench}"] - metrics[f"base_pass@1/{bench}"]
    training = read_manifest(sft_dirs["pruned"])
    metrics.update(
        {
            "n_train": len(train),
            "n_train_kept": training["n_examples"],
            "n_train_removed": int((~kept).sum()),
            "n_train_flawed": sum(1 for e in train if e.flaw),
            "n_truncated": training["n_truncated"],
            "n_rejected": training["n_rejected"],
            "train/steps": training["steps"],
            "train/first_loss": training["first_loss"],
            "train/final_loss": training["final_loss"],
            **{f"n_problems/{bench}": len(problems) for bench, problems in benchmarks.items()},
            "artifact/base_model": base,
            "artifact/dataset": str(data_dir),
            **{f"artifact/{name}": str(path) for name, path in artifacts.items()},
            **{f"artifact/sft_{name}": str(path) for name, path in sft_dirs.items()},
            **timings,
        }
    )
    write_outputs(run_dir, metrics, signals, kept, "scores" in artifacts, tracker)
    return metrics


def write_outputs(
    run_dir: Path, metrics: dict[str, Any], signals: Signals, kept: np.ndarray, with_scores: bool, tracker
) -> None:
    """metrics.json, scores.csv, figures; and the same to W&B."""
    from ifexp import figures
    from ifexp.influence.score import write_scores_csv

    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    figure_paths = []
    if with_scores:
        scores = {
            name: getattr(signals, name) for name in ("s_correct", "s_incorrect", "rank_correct", "rank_incorrect")
        }
        scores["rank_score"] = scores["rank_correct"] - scores["rank_incorrect"]
        write_scores_csv(
            run_dir / "scores.csv",
            signals.ids,
            scores,
            signals.perplexity,
            kept,
            signals.flaw if any(signals.flaw) else None,
        )
        figure_paths += figures.score_figures(run_dir / "figures", scores, kept, signals.flaw)
    deltas = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("delta_vs_random/")}
    if deltas and metrics["strategy"] != "random":
        figure_paths.append(
            figures.delta_bars(
                run_dir / "figures" / "delta_vs_random.png",
                {metrics["strategy"]: {b: (d, d, d) for b, d in deltas.items()}},
            )
        )
    if tracker is not None:
        tracker.summary({k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)})
        if with_scores:
            tracker.table("scores", run_dir / "scores.csv")
        tracker.images({path.stem: path for path in figure_paths})
    for key, value in metrics.items():
        if key.startswith(("pass@1/", "random_pass@1/", "delta_vs_random/")):
            log.info("%s = %.3f", key, value)
