"""Generation engines: vLLM (default, in its own process) and Hugging Face `generate`.

Both take the same token-id prompts and return, per prompt, n samples as text and token ids
(cut at the first end-of-turn token), so their outputs can be compared token for token, and
whether each sample stopped at the token limit rather than at an end-of-turn token.

A call's context length is its longest prompt plus max_new_tokens (`required_model_len`):
`engine.max_model_len=0` (auto) starts vLLM with exactly that; a fixed value smaller than it, or a
call that needs more than the model's context window, fails before any generation starts, so an
answer is never cut short by the model length without saying so.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ifexp.schema import EngineConfig, IfexpError

log = logging.getLogger(__name__)


@dataclass
class GenerationJob:
    """Generate for `prompts` with the model at model_path (+ LoRA adapter)."""

    name: str
    model_path: str
    adapter: str | None
    prompts: list[list[int]]
    n_samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256
    seed: int = 0


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    # Generation stopped because it reached the token limit (max_new_tokens, or the model length)
    # before an end-of-turn token: the answer may be cut off. vLLM: finish_reason == "length";
    # HF: no end-of-turn token among the max_new_tokens generated.
    length_capped: bool = False


def required_model_len(prompts: list[list[int]], max_new_tokens: int) -> int:
    """The context a generation call needs: its longest prompt plus max_new_tokens."""
    return max((len(prompt) for prompt in prompts), default=0) + max_new_tokens


def effective_model_len(engine: EngineConfig, prompts: list[list[int]], max_new_tokens: int) -> int:
    """The max_model_len the engine runs these prompts with: `required_model_len` when
    engine.max_model_len is 0 (auto), else the fixed engine.max_model_len, which must hold the
    longest prompt plus max_new_tokens (IfexpError naming both numbers otherwise)."""
    required = required_model_len(prompts, max_new_tokens)
    fixed = engine.max_model_len
    if fixed < 0:
        raise IfexpError(f"engine.max_model_len={fixed}: must be >= 0 (0 = auto: longest prompt + max_new_tokens)")
    if fixed == 0:
        return required
    if fixed < required:
        longest = required - max_new_tokens
        raise IfexpError(
            f"engine.max_model_len={fixed} is smaller than the longest prompt ({longest} tokens) + max_new_tokens "
            f"({max_new_tokens}) = {required}: set engine.max_model_len=0 (auto) or >= {required}, or lower "
            "eval.max_new_tokens / queries.max_new_tokens"
        )
    return fixed


def model_context_len(model_path: str) -> int | None:
    """The model's context window (max_position_embeddings of its config), or None when it is
    unknown (no config reachable) or stretched by RoPE scaling (the engine then decides)."""
    config_file = Path(model_path) / "config.json"
    try:
        if config_file.is_file():
            config = json.loads(config_file.read_text())
        else:  # a hub id: its config from the Hugging Face cache (or the network)
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(model_path).to_dict()
    except Exception:  # noqa: BLE001 - an unreadable config only skips this early check
        return None
    config = config.get("text_config") or config
    scaling = config.get("rope_scaling") or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) != "llama3":
        return None
    context = config.get("max_position_embeddings")
    return int(context) if context else None


def check_model_len(engine: EngineConfig, jobs: list[GenerationJob]) -> dict[str, int]:
    """model path -> the max_model_len its engine instance runs with (the largest of its jobs');
    IfexpError, before anything is generated, when a job does not fit."""
    lengths: dict[str, int] = {}
    contexts: dict[str, int | None] = {}
    for job in jobs:
        model_len = effective_model_len(engine, job.prompts, job.max_new_tokens)
        path = str(job.model_path)
        if path not in contexts:
            contexts[path] = model_context_len(path)
        context = contexts[path]
        if context is not None and model_len > context:
            required = required_model_len(job.prompts, job.max_new_tokens)
            if required > context:
                raise IfexpError(
                    f"generation needs {required} tokens (longest prompt {required - job.max_new_tokens} + "
                    f"max_new_tokens {job.max_new_tokens}) but {path} has a {context}-token context "
                    "(max_position_embeddings): lower eval.max_new_tokens / queries.max_new_tokens"
                )
            raise IfexpError(
                f"engine.max_model_len={model_len} exceeds the {context}-token context of {path}: "
                f"set engine.max_model_len=0 (auto) or <= {context}"
            )
        lengths[path] = max(lengths.get(path, 0), model_len)
    return lengths


def generate(engine: EngineConfig, jobs: list[GenerationJob]) -> dict[str, list[list[Sample]]]:
    """job name -> per prompt, its samples."""
    if engine.name == "hf":
        check_model_len(engine, jobs)  # the same limits as vLLM, so a config that runs on one runs on both
        return {job.name: hf_generate(job, engine) for job in jobs}
    if engine.name == "vllm":
        return vllm_generate(engine, jobs)
    raise IfexpError(f"engine.name='{engine.name}': expected vllm or hf")


def cut_at_eos(token_ids: list[int], eos_ids: set[int]) -> list[int]:
    for position, token in enumerate(token_ids):
        if token in eos_ids:
            return token_ids[:position]
    return token_ids


def hf_sample(new_tokens: list[int], eos_ids: set[int], tokenizer) -> Sample:
    """One HF generation (the new tokens, padded after an end-of-turn token) as a Sample: without
    an end-of-turn token, generation ran to max_new_tokens (length_capped)."""
    ids = cut_at_eos(new_tokens, eos_ids)
    return Sample(tokenizer.decode(ids, skip_special_tokens=True), ids, length_capped=len(ids) == len(new_tokens))


# ---------------------------------------------------------------------------------------------
# Hugging Face


def hf_generate(job: GenerationJob, engine: EngineConfig) -> list[list[Sample]]:
    from ifexp.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(job.model_path)
    model = load_model(job.model_path, engine.dtype, adapter=job.adapter, merge=True).eval()
    eos_ids = {tokenizer.eos_token_id}
    torch.manual_seed(job.seed)
    results: list[list[Sample]] = []
    batches = range(0, len(job.prompts), engine.hf_batch_size)
    for start in tqdm(batches, desc=f"generate [{job.name}, hf]"):
        batch = job.prompts[start : start + engine.hf_batch_size]
        width = max(len(p) for p in batch)
        # Left padding so that every prompt ends where generation starts.
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1
        sampling = {"do_sample": True, "temperature": job.temperature} if job.temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=job.max_new_tokens,
                num_return_sequences=job.n_samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                top_p=1.0,
                top_k=0,
                **sampling,
            )
        new_tokens = output[:, width:].tolist()
        for row in range(len(batch)):
            samples = []
            for k in range(job.n_samples):
                samples.append(hf_sample(new_tokens[row * job.n_samples + k], eos_ids, tokenizer))
            results.append(samples)
    return results


# ---------------------------------------------------------------------------------------------
# vLLM: one subprocess per base model, so its memory (and its worker processes) go away after.


def vllm_environment(engine: EngineConfig) -> dict[str, str]:
    env = dict(os.environ)
    if not torch.cuda.is_available():
        # vLLM-CPU wants 92% of NUMA node 0's memory for its KV cache unless told otherwise.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.kv_cache_gib))
        if engine.cpu_threads_bind == "all":
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        elif engine.cpu_threads_bind != "auto":
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", engine.cpu_threads_bind)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_streaming(command: list[str], env: dict[str, str], keep: int = 16384) -> tuple[int, str]:
    """Run a command, passing its output (progress bars included) through to our stderr as it
    comes, and keep the end of it for the error message."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail = b""
    for chunk in iter(lambda: process.stdout.read1(4096), b""):
        if hasattr(sys.stderr, "buffer"):
            sys.stderr.buffer.write(chunk)
        else:  # a replaced stderr (some test runners) takes text only
            sys.stderr.write(chunk.decode(errors="replace"))
        sys.stderr.flush()
        tail = (tail + chunk)[-keep:]
    return process.wait(), tail.decode(errors="replace")


def vllm_generate(engine: EngineConfig, jobs: list[GenerationJob]) -> dict[str, list[list[Sample]]]:
    results: dict[str, list[list[Sample]]] = {}
    model_lens = check_model_len(engine, jobs)
    by_model: dict[str, list[GenerationJob]] = {}
    for job in jobs:
        by_model.setdefault(str(job.model_path), []).append(job)
    for model_path, model_jobs in by_model.items():
        with tempfile.TemporaryDirectory(prefix="ifexp-vllm-") as tmp:
            request, response = Path(tmp) / "request.json", Path(tmp) / "response.json"
            request.write_text(
                json.dumps(
                    {
                        "engine": asdict(engine),
                        "model_path": model_path,
                        "max_model_len": model_lens[model_path],
                        "jobs": [{**asdict(j), "model_path": model_path} for j in model_jobs],
                    }
                )
            )
            names = ", ".join(j.name for j in model_jobs)
            log.info("vLLM: generating for %s in a subprocess (max_model_len %d)", names, model_lens[model_path])
            returncode, tail = run_streaming(
                [sys.executable, "-m", "ifexp.evaluate.vllm_worker", str(request), str(response)],
                env=vllm_environment(engine),
            )
            if returncode != 0:
                tail = "\n".join(tail.strip().splitlines()[-15:])
                raise RuntimeError(f"vLLM generation failed for {names} (exit {returncode}):\n{tail}")
            for name, per_prompt in json.loads(response.read_text()).items():
                results[name] = [[Sample(**s) for s in samples] for samples in per_prompt]
    return results
