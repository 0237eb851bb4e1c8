"""Subprocess body of the vLLM engine: one vLLM instance for one base model (LoRA adapters served
without merging), in its own process so that its memory goes away with it.

`python -m ifexp.evaluate.vllm_worker --serve DONE_FD` starts an engine from the first request
and keeps it: each line on stdin is `{"request": path, "response": path}`; when a response is
written, its path is written as a line to the file descriptor DONE_FD (stdout and stderr carry
vLLM's own output). End of input stops it. `engines.VllmServer` drives this, for one call (a fresh
engine) or for every greedy call of a process (engine.reuse).

The request carries the max_model_len to start vLLM with (`engines.check_model_len`: the longest
prompt plus max_new_tokens, or the fixed engine.max_model_len), so no generation is stopped by the
model length; a sample that reaches max_tokens is marked length_capped (finish_reason "length").

It also carries the engine's seed and whether to seed each request (`engines.engine_groups`
decides): where requests cannot be seeded (vLLM-CPU), a sampled job must be the only job of an
engine started with its seed, and the worker refuses anything else rather than let a job's samples
depend on what ran before it. This module imports no other ifexp module but `samples`: `engines`
imports it, never the other way round.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ifexp.evaluate.samples import Sample, cut_at_eos

# vLLM accepts only these values for max_lora_rank; an adapter of rank r needs the next one up.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def supported_lora_rank(rank: int) -> int:
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def adapter_rank(adapter: str) -> int:
    return json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]


def start_engine(request: dict[str, Any]):
    """The vLLM instance a request asks for (`engines.vllm_generate_on_one_engine` decides every
    setting): its base model, engine settings, max_model_len, LoRA (`enable_lora`, room for
    `max_loras` adapters of rank up to `max_lora_rank`) and seed."""
    from vllm import LLM

    engine = request["engine"]
    return LLM(
        model=request["model_path"],
        dtype=engine["dtype"],
        enforce_eager=engine["enforce_eager"],
        max_model_len=request["max_model_len"],
        tensor_parallel_size=engine["tensor_parallel_size"],
        gpu_memory_utilization=engine["gpu_memory_utilization"],
        enable_lora=request["enable_lora"],
        max_lora_rank=request["max_lora_rank"],
        max_loras=request["max_loras"],
        seed=request["seed"],
    )


def check_sampling_is_seeded(request: dict[str, Any], fresh_engine: bool, on_cpu: bool) -> None:
    """A sampled job's samples must be a function of the job alone: seeded per request (not on
    vLLM-CPU, which fails on a request's seed), or the only job of a fresh engine started with its
    seed. RuntimeError otherwise (engines.engine_groups groups jobs so that this never fires)."""
    sampled = [job for job in request["jobs"] if job["temperature"] > 0]
    if not sampled:
        return
    if request["seed_each_request"]:
        if on_cpu:
            raise RuntimeError("vLLM-CPU cannot seed a request: a sampled job needs an engine of its own")
        return
    if not fresh_engine or len(request["jobs"]) > 1 or sampled[0]["seed"] != request["seed"]:
        raise RuntimeError(
            f"sampled job {sampled[0]['name']}: without a seed per request, a sampled job must be the only "
            "job of a fresh engine started with its seed"
        )


def run_jobs(llm, request: dict[str, Any], lora_ids: dict[str, int]) -> dict[str, list]:
    """job name -> per prompt, its samples (as dicts of samples.Sample). `lora_ids` maps each
    adapter path to the id vLLM knows it by, across calls: vLLM caches an adapter by its id, so an
    id must never be given to a second adapter."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    tokenizer = llm.get_tokenizer()
    eos_ids = {tokenizer.eos_token_id}
    results = {}
    for job in request["jobs"]:
        seeded = request["seed_each_request"] and job["temperature"] > 0
        params = SamplingParams(
            n=job["n_samples"],
            temperature=job["temperature"],
            max_tokens=job["max_new_tokens"],
            seed=job["seed"] if seeded else None,
        )
        lora = None
        if job["adapter"]:
            lora_id = lora_ids.setdefault(job["adapter"], len(lora_ids) + 1)
            lora = LoRARequest(f"adapter-{lora_id}", lora_id, job["adapter"])
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in job["prompts"]]
        outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=True)
        per_prompt = []
        for output in outputs:
            samples = []
            for completion in output.outputs:
                ids = cut_at_eos(list(completion.token_ids), eos_ids)
                capped = completion.finish_reason == "length"
                samples.append(asdict(Sample(tokenizer.decode(ids, skip_special_tokens=True), ids, capped)))
            per_prompt.append(samples)
        results[job["name"]] = per_prompt
    return results


def serve(done_fd: int) -> None:
    from vllm.platforms import current_platform

    llm = None
    lora_ids: dict[str, int] = {}
    with os.fdopen(done_fd, "w", buffering=1) as done:
        for line in sys.stdin:
            message = json.loads(line)
            request = json.loads(Path(message["request"]).read_text())
            fresh_engine = llm is None
            check_sampling_is_seeded(request, fresh_engine, current_platform.is_cpu())
            if fresh_engine:
                llm = start_engine(request)
            Path(message["response"]).write_text(json.dumps(run_jobs(llm, request, lora_ids)))
            done.write(message["response"] + "\n")


if __name__ == "__main__":
    serve(int(sys.argv[sys.argv.index("--serve") + 1]))
