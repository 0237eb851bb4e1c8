"""The GPU cost sheet of docs/performance.md: each stage of a paper job (LoRA on LIMO) on one 80 GB
GPU, *computed, not measured*, from parameter counts, token counts, the per-token costs measured on
this project's CPU (ifexp-bench memory / features) and the stated assumptions below.

    python scripts/gpu_cost_sheet.py [--mean-tokens 4000] [--mfu 0.35] [--decode-tok-s 3000]

prints the markdown table. Every assumption is an option or a constant here, with where it comes
from; scripts/gpu_check.sh measures the same figures on a reduced run when a GPU is there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Model:
    """The shapes of a model's config.json (max_position_embeddings is its context)."""

    name: str
    params: float  # all parameters
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_dim: int  # num_key_value_heads x head_dim
    context: int

    def lora_params(self, rank: int = 8) -> int:
        """LoRA r on q, k, v, o, gate, up, down (the paper configs' lora_targets)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # (in, out)
        return self.layers * sum(rank * (a + b) for a, b in shapes)


# From the models' config.json on the Hugging Face hub (not downloaded here: no network).
MODELS = (
    Model("Llama-3-8B-Instruct", 8.03e9, 32, 4096, 14336, 128256, 1024, 8192),
    Model("Qwen2.5-Math-7B-Instruct", 7.62e9, 28, 3584, 18944, 152064, 512, 4096),
)

# Measured on SmolLM2-135M (30 layers, hidden 576, intermediate 1536, vocab 49,152), fp32, 2 cores,
# ifexp-bench memory (docs/performance.md), with checkpointing: peak bytes per token of a training
# step = checkpoints (layers x hidden x 4) + one layer's recompute + LOGIT_COPIES x vocab x 4.
# LOGIT_COPIES is what the measured slope (1.32 MB per token from 512 to 2,048 tokens, 1.12 from 2,048
# to 8,192) leaves for the logits once the checkpoints (69 kB) and one layer (29 kB) are taken out:
# 6.2 and 5.2 fp32 copies of vocab-wide rows; 6 is taken (an upper bound under bf16 autocast, where
# some copies are bf16). LAYER_BYTES_PER_TOKEN_PER_WIDTH is one layer's recompute: without
# checkpointing a step at 2,048 tokens holds 1,778 MB more, 29 kB per token per layer, per unit of
# hidden + intermediate width.
LOGIT_COPIES = 6.0
LAYER_BYTES_PER_TOKEN_PER_WIDTH = 29_000 / (576 + 1536)
# Measured: feature extraction's peak over a training step's at the same length, with checkpointing
# (ifexp-bench memory: 1.00 at 512, 1.10 at 2,048, 1.14 at 8,192 tokens), and its time
# (ifexp-bench features: features_over_train 1.11-1.15 on earlier runs).
FEATURES_OVER_TRAIN_MEMORY = 1.15
FEATURES_OVER_TRAIN_TIME = 1.15

# The paper job (sweeps/paper.yaml, conf/dataset/limo.yaml, conf/eval/paper.yaml, conf/train/lora.yaml)
LIMO_TRACES = 817
N_VAL = 64
EPOCHS = 2
BATCH = 8  # train.batch_size and estimator.batch_size
QUERY_SAMPLES = 4
QUERY_NEW_TOKENS = 3000
EVAL_PROBLEMS = 1319 + 500 + 675 + 40 + 30 + 198  # GSM8K test, MATH500, OlympiadBench, AMC23, AIME24, GPQA-D
EVAL_NEW_TOKENS = 3000
H100_BF16_FLOPS = 989e12  # dense bf16, H100 SXM 80 GB


def training_memory(model: Model, tokens: int, batch: int) -> dict[str, float]:
    """Bytes of a LoRA training step at `tokens` per sequence: the base loaded in float32 (as
    ifexp.models.load_model does; bf16 autocast computes in bf16), LoRA weights with AdamW
    (weights, gradients, 2 moments, fp32), checkpoints, one layer's recompute, the logits."""
    return {
        "weights": 4 * model.params,
        "lora_and_adam": 16 * model.lora_params(),
        "checkpoints": batch * tokens * model.layers * model.hidden * 4,
        "one_layer": batch * tokens * LAYER_BYTES_PER_TOKEN_PER_WIDTH * (model.hidden + model.intermediate),
        "logits": batch * tokens * LOGIT_COPIES * model.vocab * 4,
    }


def fwd_bwd_seconds(model: Model, tokens: float, mfu: float, mean_tokens: int) -> float:
    """Forward (2P per token), backward to the inputs (2P; LoRA's own weight gradients are
    negligible), the checkpointed recompute (2P), attention (about 4 L T d per token per pass, 3
    passes) at mean sequence length; at mfu of the GPU's bf16 peak."""
    per_token = 6 * model.params + 3 * 4 * model.layers * model.hidden * mean_tokens
    return tokens * per_token / (mfu * H100_BF16_FLOPS)


def row(stage: str, memory: str, seconds: float | None, what: str) -> str:
    time = "—" if seconds is None else (f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s")
    return f"| {stage} | {memory} | {time} | {what} |"


def sheet(model: Model, mean_tokens: int, mfu: float, decode: float) -> list[str]:
    n_train = LIMO_TRACES - N_VAL
    longest = model.context  # what truncation allows: the longest batch is at the context
    train = training_memory(model, longest, BATCH)
    one = training_memory(model, longest, 1)
    fits = {b: sum(training_memory(model, longest, b).values()) / GB for b in (1, 2, 4, 8)}
    biggest = max((b for b, gb in fits.items() if gb <= 80), default=0)
    train_tokens = n_train * mean_tokens * EPOCHS
    query_tokens = N_VAL * QUERY_SAMPLES * QUERY_NEW_TOKENS
    eval_tokens = EVAL_PROBLEMS * EVAL_NEW_TOKENS
    return [
        f"**{model.name}** ({model.params / 1e9:.2f} B parameters, LoRA r=8 on all 7 projections: "
        f"{model.lora_params() / 1e6:.1f} M; {model.layers} layers, hidden {model.hidden}, vocab "
        f"{model.vocab:,}; max_seq_len = context = {model.context:,})",
        "",
        "| stage | peak GPU memory (computed) | time (computed) | what |",
        "| --- | --- | --- | --- |",
        row(
            "sft θ*",
            f"{sum(train.values()) / GB:.0f} GB at batch {BATCH} × {longest:,} tokens "
            f"(batch 1: {sum(one.values()) / GB:.0f} GB; fits 80 GB up to batch {biggest})",
            fwd_bwd_seconds(model, train_tokens, mfu, mean_tokens),
            f"{n_train} traces × {mean_tokens:,} tokens × {EPOCHS} epochs; weights {train['weights'] / GB:.0f} GB "
            f"fp32, checkpoints {train['checkpoints'] / GB:.1f} GB, logits {train['logits'] / GB:.0f} GB "
            f"at batch {BATCH}",
        ),
        row(
            "eval[val] (θ*'s answers, vLLM)",
            "0.85 × 80 GB (engine.gpu_memory_utilization)",
            query_tokens / decode,
            f"{N_VAL} questions × {QUERY_SAMPLES} samples × ≤ {QUERY_NEW_TOKENS:,} new tokens (upper bound)",
        ),
        row(
            "features (training traces)",
            f"{FEATURES_OVER_TRAIN_MEMORY * sum(train.values()) / GB:.0f} GB at batch {BATCH} "
            f"(batch 1: {FEATURES_OVER_TRAIN_MEMORY * sum(one.values()) / GB:.0f} GB)",
            FEATURES_OVER_TRAIN_TIME * fwd_bwd_seconds(model, n_train * mean_tokens, mfu, mean_tokens),
            f"{n_train} traces, one forward + backward each; store {n_train * 4096 * 4 / 1e6:.0f} MB (k = 4,096, fp32)",
        ),
        row(
            "features (queries)",
            "as above, at ≤ 1,024 + 3,000 tokens",
            FEATURES_OVER_TRAIN_TIME * fwd_bwd_seconds(model, query_tokens, mfu, mean_tokens),
            f"{N_VAL * QUERY_SAMPLES} answers",
        ),
        row("scores", "< 1 GB (CPU)", 2, f"N = {n_train}, Q ≤ {N_VAL * QUERY_SAMPLES}, k = 4,096: the fit dominates"),
        row(
            "sft pruned + Random's (+ full, once a seed)",
            "as sft θ*",
            fwd_bwd_seconds(model, train_tokens, mfu, mean_tokens) * (2 * 0.9 + 1),
            "at fraction 0.1: 2 × 90% of θ*'s tokens, and the full model once per seed",
        ),
        row(
            "eval (paper benchmarks, vLLM)",
            "0.85 × 80 GB",
            4 * eval_tokens / decode,
            f"pruned, Random, base, full × {EVAL_PROBLEMS:,} problems × ≤ {EVAL_NEW_TOKENS:,} new tokens (upper bound)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mean-tokens", type=int, default=4000, help="ASSUMED mean tokens of a LIMO trace + prompt")
    parser.add_argument("--mfu", type=float, default=0.35, help="ASSUMED fraction of the bf16 peak a step reaches")
    parser.add_argument("--decode-tok-s", type=float, default=3000, help="ASSUMED vLLM output tokens/s, one GPU")
    args = parser.parse_args()
    for model in MODELS:
        print("\n".join(sheet(model, args.mean_tokens, args.mfu, args.decode_tok_s)))
        print()


if __name__ == "__main__":
    main()
