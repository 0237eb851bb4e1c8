"""Stage `eval`: one model's graded answers to one benchmark's problems (generations.jsonl, and
pass@1 in the manifest). theta*'s answers to the validation questions, from which the query sets
Q_C and Q_I are made, are an eval artifact too (ifexp.stages.queries).

Keyed by the model's identity (base and fine-tuning digests), the problems' content, the system
prompt, the generation config's slice, the engine settings that can change an answer, the
context length, the benchmark's answer format and, when sampling, the seed. Every missing
(model, benchmark) pair is generated in one engine call; a sampled pair's answers depend on its
own job only (ifexp.evaluate.engines), never on which other pairs were missing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ifexp.cache import Artifact, Stage, config_slice, content_hash
from ifexp.evaluate.engines import GenerationJob, effective_model_len, generate
from ifexp.evaluate.grading import is_correct, pass_at_1
from ifexp.examples import Problem
from ifexp.models import Checkpoint, load_tokenizer
from ifexp.prompts import prompt_ids
from ifexp.schema import EngineConfig, EvalConfig, QueryConfig, resource_fields

log = logging.getLogger(__name__)
STAGE = Stage("eval", __name__)
GENERATIONS = "generations.jsonl"
# Generation config fields that choose *which* problems and models are evaluated: they count
# through the problems' content and the models' identities, not in one model's answers to one
# problem. Every other field (and any new one) is in the key.
NOT_IN_KEY = {
    EvalConfig: ("benchmarks", "max_examples", "eval_base", "eval_full", "benchmark_seed"),
    QueryConfig: (),
}


def evaluate(
    cache_dir: Path,
    models: dict[str, Checkpoint],
    benchmarks: dict[str, list[Problem]],
    answer_formats: dict[str, str],
    generation: EvalConfig | QueryConfig,
    engine: EngineConfig,
    system_prompt: str | None,
    seed: int,
) -> dict[str, dict[str, Artifact]]:
    """model name -> benchmark -> its eval artifact; every pair not in the cache yet is generated
    in one engine call. Each benchmark is graded in its own answer format (`answer_formats`: the
    dataset's for its own questions, the benchmark's elsewhere: benchmarks.answer_format_for)."""
    tokenizer = load_tokenizer(next(iter(models.values())).model_path)
    prompts = {
        bench: [prompt_ids(tokenizer, p.question, system_prompt) for p in problems]
        for bench, problems in benchmarks.items()
    }
    inputs: dict[tuple[str, str], dict[str, Any]] = {}
    for model_name, model in models.items():
        for bench, problems in benchmarks.items():
            inputs[model_name, bench] = {
                "model": model.identity,
                "benchmark": bench,
                "problems": content_hash([asdict(p) for p in problems]),
                "system_prompt": system_prompt,
                "generation": config_slice(generation, exclude=NOT_IN_KEY[type(generation)]),
                "engine": config_slice(engine, exclude=resource_fields("engine")),
                # the context these prompts get (a config error when too small for them)
                "max_model_len": effective_model_len(engine, prompts[bench], generation.max_new_tokens),
                "answer_format": answer_formats[bench],
                "seed": seed if generation.temperature > 0 else 0,  # greedy output does not depend on it
            }
    digests = {pair: STAGE.locate(cache_dir, pair_inputs).digest for pair, pair_inputs in inputs.items()}
    # one generation per distinct artifact (the Random job's pruned model is also its Random model)
    missing: dict[str, tuple[str, str]] = {}
    for pair, digest in digests.items():
        if digest not in missing and STAGE.find(cache_dir, inputs[pair]) is None:
            missing[digest] = pair
    samples: dict[str, list] = {}
    generation_s = 0.0
    if missing:
        jobs = [
            GenerationJob(
                digest,
                models[model_name].model_path,
                models[model_name].adapter,
                prompts[bench],
                n_samples=generation.n_samples,
                temperature=generation.temperature,
                max_new_tokens=generation.max_new_tokens,
                seed=seed,
            )
            for digest, (model_name, bench) in missing.items()
        ]
        started = time.time()
        samples = generate(engine, jobs)
        generation_s = round((time.time() - started) / len(jobs), 2)  # one engine call shared by all jobs

    def grade(bench: str, digest: str):
        def build(out: Path) -> dict:
            graded, n_length_capped = [], 0
            with (out / GENERATIONS).open("w") as handle:
                for problem, problem_samples in zip(benchmarks[bench], samples[digest], strict=True):
                    correct = [is_correct(s.text, problem.answer, answer_formats[bench]) for s in problem_samples]
                    capped = [s.length_capped for s in problem_samples]
                    graded.append(correct)
                    n_length_capped += sum(capped)
                    record = {
                        **asdict(problem),
                        "responses": [s.text for s in problem_samples],
                        "correct": correct,
                        "length_capped": capped,
                    }
                    handle.write(json.dumps(record) + "\n")
            return {
                "pass@1": pass_at_1(graded),
                "n_problems": len(graded),
                "n_samples": sum(len(c) for c in graded),
                "n_length_capped": n_length_capped,
                "answer_format": answer_formats[bench],
                "generation_s": generation_s,
            }

        return build

    return {
        model_name: {
            bench: STAGE.get(cache_dir, inputs[model_name, bench], grade(bench, digests[model_name, bench]))
            for bench in benchmarks
        }
        for model_name in models
    }


def read_generations(artifact: Artifact) -> list[dict]:
    """The graded answers of an eval artifact, one record per problem."""
    return [json.loads(line) for line in (artifact / GENERATIONS).read_text().splitlines()]


def warn_if_length_capped(what: str, manifest: dict[str, Any], key: str) -> None:
    """More than 5% of the answers stopped by the token limit: pass@1 (or Q_C) is likely too low."""
    if manifest["n_length_capped"] > 0.05 * manifest["n_samples"]:
        log.warning(
            "%s: %d of %d answers hit the token limit before ending (raise %s)",
            what,
            manifest["n_length_capped"],
            manifest["n_samples"],
            key,
        )
