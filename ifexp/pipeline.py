"""The main job, as a chain of cached stages:

    dataset -> base_model -> sft_full -> eval(base, fine-tuned; every benchmark) -> metrics.json

Each stage's artifact lives in the content-addressed cache (ifexp.cache), so a rerun reuses
what is done and a killed run resumes from the last finished stage.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ifexp.cache import cached_stage, content_hash, file_hash, read_manifest
from ifexp.data import Example, build_splits, read_jsonl, write_jsonl
from ifexp.evaluate.benchmarks import Problem, load_benchmark
from ifexp.evaluate.engines import GenerationJob, generate
from ifexp.evaluate.grading import is_correct, pass_at_1
from ifexp.models import load_model, load_tokenizer, prepare_model, prompt_ids
from ifexp.schema import IfexpError, JobConfig, validate
from ifexp.train import collate, encode_examples, finetune

log = logging.getLogger(__name__)


@contextmanager
def timed(timings: dict[str, float], stage: str):
    started = time.time()
    yield
    timings[f"time/{stage}_s"] = round(time.time() - started, 2)


def artifact_id(path: str) -> str:
    """The identity of a model reference: a cache artifact's hash, or a hub id."""
    return Path(path).name if Path(path).is_dir() else path


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


def sft_stage(cfg: JobConfig, cache_dir: Path, base: str, data_dir: Path, train: list[Example]) -> Path:
    key = {
        "base": artifact_id(base),
        "data": data_dir.name,
        "train": asdict(cfg.train),
        "max_seq_len": cfg.model.max_seq_len,
        "system_prompt": cfg.model.system_prompt,
        "lora_targets": list(cfg.model.lora_targets),
        "seed": cfg.seed,
    }
    return cached_stage(
        cache_dir, "sft_full", key, lambda out: finetune(base, train, cfg.model, cfg.train, cfg.seed, out)
    )


def features_stage(
    cfg: JobConfig, cache_dir: Path, base: str, sft_dir: Path, examples: list[Example], split_key: str
) -> Path:
    """Projected gradient features of examples at theta*, in a memmap store, reused by every job.

    Keyed by the weights (sft artifact), the examples' content and the projection config; the
    preconditioner is not part of the key, so all estimators sharing a projection share it.
    """
    est = cfg.estimator
    key = {
        "sft": sft_dir.name,
        "examples": content_hash([asdict(e) for e in examples]),
        "split": split_key,
        "projection": {k: getattr(est, k) for k in ("projection", "k", "k_in", "k_out", "seed", "store_dtype")},
        "max_seq_len": cfg.model.max_seq_len,
        "system_prompt": cfg.model.system_prompt,
    }

    def build(out: Path) -> dict:
        from ifexp.influence.estimator import make_projector
        from ifexp.influence.features import extract_features, write_store

        tokenizer = load_tokenizer(base)
        encoded = encode_examples(tokenizer, examples, cfg.model, "truncate")
        if encoded.n_rejected:
            raise IfexpError(f"features: {encoded.n_rejected} examples have prompts longer than model.max_seq_len")
        model_path, adapter = model_under_test(cfg, base, sft_dir)
        model = load_model(model_path, adapter=adapter)
        if adapter:
            for name, param in model.named_parameters():
                param.requires_grad_("lora_" in name)
        rows = list(zip(encoded.input_ids, encoded.prompt_lengths, strict=True))
        projector = make_projector(est, model)
        features, losses = extract_features(
            model,
            rows,
            projector,
            lambda b: collate(b, tokenizer.pad_token_id),
            est.batch_size,
            desc=f"features [{split_key}]",
        )
        write_store(out, [e.id for e in examples], features, est.store_dtype, projector)
        return {
            "n": len(examples),
            "k": projector.k,
            "n_truncated": encoded.n_truncated,
            "mean_loss": float(losses.mean()),
        }

    return cached_stage(cache_dir, "features", key, build)


def model_under_test(cfg: JobConfig, base: str, sft_dir: Path | None) -> tuple[str, str | None]:
    """(model path, LoRA adapter) of the base model (sft_dir None) or of a fine-tuned one."""
    if sft_dir is None:
        return base, None
    if cfg.train.method == "lora":
        return base, str(sft_dir / "weights")
    return str(sft_dir / "weights"), None


def eval_stage(
    cfg: JobConfig, cache_dir: Path, models: dict[str, tuple[str, str | None]], benchmarks: dict[str, list[Problem]]
) -> dict[str, dict[str, Path]]:
    """Generate and grade every (model, benchmark) pair not in the cache yet, in one engine call."""
    tokenizer = load_tokenizer(next(iter(models.values()))[0])
    sampling = {k: getattr(cfg.eval, k) for k in ("n_samples", "temperature", "max_new_tokens")}
    keys: dict[tuple[str, str], dict[str, Any]] = {}
    for model_name, (model_path, adapter) in models.items():
        for bench, problems in benchmarks.items():
            keys[model_name, bench] = {
                "model": artifact_id(model_path),
                "adapter": Path(adapter).parent.name if adapter else None,
                "benchmark": bench,
                "problems": content_hash([asdict(p) for p in problems]),
                "system_prompt": cfg.model.system_prompt,
                "sampling": sampling,
                "engine": {"name": cfg.engine.name, "dtype": cfg.engine.dtype},
                "seed": cfg.seed,
            }
    missing = [
        pair for pair, key in keys.items() if not (cache_dir / "eval" / content_hash(key) / "manifest.json").is_file()
    ]
    prompts = {
        bench: [prompt_ids(tokenizer, p.question, cfg.model.system_prompt) for p in problems]
        for bench, problems in benchmarks.items()
    }
    jobs = [
        GenerationJob(f"{model_name}/{bench}", *models[model_name], prompts[bench], seed=cfg.seed, **sampling)
        for model_name, bench in missing
    ]
    samples = generate(cfg.engine, jobs) if jobs else {}

    def writer(model_name: str, bench: str):
        def build(out: Path) -> dict:
            graded = []
            with (out / "generations.jsonl").open("w") as handle:
                for problem, problem_samples in zip(benchmarks[bench], samples[f"{model_name}/{bench}"], strict=True):
                    correct = [is_correct(s.text, problem.answer) for s in problem_samples]
                    graded.append(correct)
                    record = {**asdict(problem), "responses": [s.text for s in problem_samples], "correct": correct}
                    handle.write(json.dumps(record) + "\n")
            return {"pass@1": pass_at_1(graded), "n_problems": len(graded)}

        return build

    return {
        model_name: {
            bench: cached_stage(cache_dir, "eval", keys[model_name, bench], writer(model_name, bench))
            for bench in benchmarks
        }
        for model_name in models
    }


def run_job(cfg: JobConfig, run_dir: Path, tracker=None) -> dict[str, Any]:
    """Fine-tune on the CoT set, evaluate base and fine-tuned model; write metrics.json."""
    validate(cfg)
    cache_dir = Path(cfg.paths.cache_dir).resolve()
    timings: dict[str, float] = {}
    metrics: dict[str, Any] = {"model": cfg.model.name, "dataset": cfg.dataset.name, "seed": cfg.seed}

    # Data first: a bad input file fails before minutes of model conversion.
    with timed(timings, "dataset"):
        data_dir, splits = dataset_stage(cfg, cache_dir)
    with timed(timings, "base_model"):
        base = prepare_model(cfg.model, cache_dir)
    with timed(timings, "benchmarks"):
        benchmarks = {
            name: load_benchmark(
                name,
                cfg.eval.max_examples,
                cfg.eval.benchmark_seed,
                splits["test"] if cfg.dataset.source == "gsm_symbolic" else None,
            )
            for name in cfg.eval.benchmarks
        }
    with timed(timings, "sft_full"):
        sft_dir = sft_stage(cfg, cache_dir, base, data_dir, splits["train"])
    training = read_manifest(sft_dir)

    models = {"sft": model_under_test(cfg, base, sft_dir)}
    if cfg.eval.eval_base:
        models["base"] = model_under_test(cfg, base, None)
    with timed(timings, "eval"):
        evals = eval_stage(cfg, cache_dir, models, benchmarks)

    generations_dir = run_dir / "generations"
    generations_dir.mkdir(exist_ok=True)
    for model_name, per_bench in evals.items():
        prefix = "" if model_name == "sft" else "base_"
        for bench, folder in per_bench.items():
            metrics[f"{prefix}pass@1/{bench}"] = read_manifest(folder)["pass@1"]
            (generations_dir / f"{model_name}_{bench}.jsonl").write_text((folder / "generations.jsonl").read_text())
    if cfg.eval.eval_base:
        for bench in benchmarks:
            metrics[f"gain_vs_base/{bench}"] = metrics[f"pass@1/{bench}"] - metrics[f"base_pass@1/{bench}"]
    metrics.update(
        {
            "n_train": len(splits["train"]),
            "n_train_kept": training["n_examples"],
            "n_train_flawed": sum(1 for e in splits["train"] if e.flaw),
            "n_truncated": training["n_truncated"],
            "n_rejected": training["n_rejected"],
            "train/steps": training["steps"],
            "train/first_loss": training["first_loss"],
            "train/final_loss": training["final_loss"],
            **{f"n_problems/{bench}": len(problems) for bench, problems in benchmarks.items()},
            "artifact/base_model": base,
            "artifact/dataset": str(data_dir),
            "artifact/sft_full": str(sft_dir),
            **timings,
        }
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if tracker is not None:
        tracker.summary({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    for key, value in metrics.items():
        if key.startswith(("pass@1/", "base_pass@1/")):
            log.info("%s = %.3f", key, value)
    return metrics
