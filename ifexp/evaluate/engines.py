"""Generation engines: vLLM (default, in its own process) and Hugging Face `generate`.

Both take the same token-id prompts and return, per prompt, n samples as text and token ids
(cut at the first end-of-turn token), so their outputs can be compared token for token.
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


def generate(engine: EngineConfig, jobs: list[GenerationJob]) -> dict[str, list[list[Sample]]]:
    """job name -> per prompt, its samples."""
    if engine.name == "hf":
        return {job.name: hf_generate(job, engine) for job in jobs}
    if engine.name == "vllm":
        return vllm_generate(engine, jobs)
    raise IfexpError(f"engine.name='{engine.name}': expected vllm or hf")


def cut_at_eos(token_ids: list[int], eos_ids: set[int]) -> list[int]:
    for position, token in enumerate(token_ids):
        if token in eos_ids:
            return token_ids[:position]
    return token_ids


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
                ids = cut_at_eos(new_tokens[row * job.n_samples + k], eos_ids)
                samples.append(Sample(tokenizer.decode(ids, skip_special_tokens=True), ids))
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
    by_model: dict[str, list[GenerationJob]] = {}
    for job in jobs:
        by_model.setdefault(job.model_path, []).append(job)
    for model_path, model_jobs in by_model.items():
        with tempfile.TemporaryDirectory(prefix="ifexp-vllm-") as tmp:
            request, response = Path(tmp) / "request.json", Path(tmp) / "response.json"
            request.write_text(
                json.dumps(
                    {"engine": asdict(engine), "model_path": model_path, "jobs": [asdict(j) for j in model_jobs]}
                )
            )
            names = ", ".join(j.name for j in model_jobs)
            log.info("vLLM: generating for %s in a subprocess", names)
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
