"""The paper-scale configs agree on lengths end to end, job by job.

Every generation must fit the generating model's context window with room for its longest prompt
plus max_new_tokens (else vLLM refuses to start, or an answer is cut off by the model length); a
fixed engine.max_model_len must hold a prompt of up to model.max_seq_len plus max_new_tokens; and
theta*'s query answers must fit model.max_seq_len whole when their gradient features are taken
(features encode question + response cut at model.max_seq_len). LIMO traces longer than
model.max_seq_len are truncated (counted: n_truncated, n_tokens_cut) or, with
train.overlong=reject, dropped.
"""

import pytest
from helpers.jobs import expand_sweep

from ifexp.cli import compose_job
from ifexp.examples import Example
from ifexp.models import load_tokenizer
from ifexp.schema import JobConfig, ModelConfig, TinyModelConfig
from ifexp.train import encode_examples

# Each model's context window: max_position_embeddings of its config.json (Qwen2.5-Math-7B-Instruct
# has 4,096 positions, Meta-Llama-3-8B-Instruct 8,192, SmolLM2-135M-Instruct 8,192).
CONTEXT = {"llama3_8b_instruct": 8192, "qwen25_math_7b_instruct": 4096, "smollm2_135m": 8192}
# The longest prompt (chat template + question + instruction, in tokens) a job feeds a model from
# each benchmark or validation set. Offline sets: measured with SmolLM2's tokenizer and default
# system prompt (gsm_symbolic 208, ASDiv 148, CHAMP 156); hub sets: a budget for competition
# problems (GPQA with its four options), which the engines check again at run time.
PROMPT_BUDGET = {
    **dict.fromkeys(("gsm_symbolic", "asdiv", "champ", "basic_arithmetic", "chain_sum"), 256),
    **dict.fromkeys(("limo", "gsm8k", "math500", "olympiadbench", "amc23", "aime24", "gpqa_diamond"), 1024),
}


def length_problems(job: JobConfig) -> list[str]:
    """What does not fit, in words (empty when the job's lengths agree)."""
    problems = []
    scorer = job.scorer or job.model
    fixed = job.engine.max_model_len
    generations = [  # (what, the generating model, its prompts, max_new_tokens)
        ("eval", job.model, max(PROMPT_BUDGET[b] for b in job.eval.benchmarks), job.eval.max_new_tokens),
        ("queries", scorer, PROMPT_BUDGET[job.dataset.name], job.queries.max_new_tokens),
    ]
    for what, model, prompt, new_tokens in generations:
        context = CONTEXT[model.name]
        if prompt + new_tokens > context:
            problems.append(f"{what}: prompt {prompt} + {what}.max_new_tokens {new_tokens} > {model.name}'s {context}")
        if fixed and fixed < model.max_seq_len + new_tokens:
            problems.append(
                f"{what}: engine.max_model_len {fixed} < model.max_seq_len {model.max_seq_len} + {new_tokens}"
            )
        if fixed > context:
            problems.append(f"{what}: engine.max_model_len {fixed} > {model.name}'s context {context}")
    # theta*'s answers (+ end-of-turn) whole in their gradient features
    needed = PROMPT_BUDGET[job.dataset.name] + job.queries.max_new_tokens + 1
    if scorer.max_seq_len < needed:
        problems.append(f"features: {scorer.name} max_seq_len {scorer.max_seq_len} < query prompt + answer {needed}")
    for model in {job.model.name: job.model, scorer.name: scorer}.values():
        if model.max_seq_len > CONTEXT[model.name]:
            problems.append(f"train: {model.name} max_seq_len {model.max_seq_len} > context {CONTEXT[model.name]}")
    return problems


def paper_jobs() -> list[list[str]]:
    """Every job of the paper and transfer sweeps, and the reduced GPU experiment (as its comment
    runs it, with either model)."""
    jobs = [[f"sweeps={sweep}", *overrides] for sweep in ("paper", "transfer") for overrides in expand_sweep(sweep)]
    return [*jobs, ["experiment=gpu_reduced"], ["experiment=gpu_reduced", "model=llama3_8b_instruct"]]


def test_paper_sweeps_and_gpu_reduced_lengths_agree():
    jobs = paper_jobs()
    assert len(jobs) == 72 + 24 + 2
    failures = {
        " ".join(overrides): problems for overrides in jobs if (problems := length_problems(compose_job(overrides)))
    }
    assert not failures, "\n".join(f"{name}: {problem}" for name, problems in failures.items() for problem in problems)


def test_a_fixed_max_model_len_too_small_is_caught():
    """The check itself: the old fixed 1,024 against the paper's 4,096 new tokens."""
    overrides = ["model=qwen25_math_7b_instruct", "engine.max_model_len=1024", "eval.max_new_tokens=4096"]
    job = compose_job(["sweeps=paper", *overrides])
    problems = length_problems(job)
    assert any("engine.max_model_len 1024 < model.max_seq_len" in p for p in problems)
    assert any("eval: prompt 1024 + eval.max_new_tokens 4096 >" in p for p in problems)


@pytest.mark.parametrize("head", ["sweeps=paper", "sweeps=transfer", "experiment=gpu_reduced"])
def test_overlong_reject_is_available_on_the_paper_configs(head):
    assert compose_job([head]).train.overlong == "truncate"
    assert compose_job([head, "train.overlong=reject"]).train.overlong == "reject"


def test_traces_longer_than_max_seq_len_are_counted(tiny_model):
    """LIMO-style long traces: how many were cut, by how many tokens, and the longest example."""
    tokenizer = load_tokenizer(tiny_model)
    long_cot = "\n".join(f"Step {i}: 12 + {i} = {12 + i}." for i in range(40)) + "\n#### 51"
    examples = [Example("short", "Add 2 and 3.", "2 + 3 = 5\n#### 5", "5"), Example("long", "Add.", long_cot, "51")]
    model_cfg = ModelConfig(name="tiny_llama", source="tiny", tiny=TinyModelConfig(), max_seq_len=64)
    whole = [
        len(encode_examples(tokenizer, [e], ModelConfig(max_seq_len=10**6), "truncate").input_ids[0]) for e in examples
    ]
    assert whole[0] <= 64 < whole[1]

    truncated = encode_examples(tokenizer, examples, model_cfg, "truncate")
    assert (truncated.n_truncated, truncated.n_rejected) == (1, 0)
    assert truncated.n_tokens_cut == whole[1] - 64
    assert truncated.max_example_len == whole[1]
    assert [len(ids) for ids in truncated.input_ids] == [whole[0], 64]

    rejected = encode_examples(tokenizer, examples, model_cfg, "reject")
    assert (rejected.n_truncated, rejected.n_rejected, rejected.n_tokens_cut) == (0, 1, 0)
    assert rejected.max_example_len == whole[1] and len(rejected.input_ids) == 1
