"""How much of LIMO each paper model truncates, measured (needs the network: LIMO and the tokenizers
come from the Hugging Face hub; nothing else is downloaded).

    .venv/bin/python scripts/limo_lengths.py [OUT.json]

For each paper model: LIMO's traces as a job reads them (conf/dataset/limo.yaml: train and
validation splits, the model's chat template and default system prompt, prompt + trace +
end-of-turn) encoded at the model's max_seq_len, and counted exactly as fine-tuning counts them
(ifexp.train.encode_examples): how many are longer, the tokens cut, the longest, and the length
quantiles. scripts/gpu_check.sh runs it where the network is there (IFEXP_LIMO=1).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np

from ifexp.cli import compose_job
from ifexp.data import build_splits
from ifexp.models import load_tokenizer
from ifexp.train import encode_examples

PAPER_MODELS = ("llama3_8b_instruct", "qwen25_math_7b_instruct")


def lengths_report(model_name: str) -> dict:
    job = compose_job(["dataset=limo", f"model={model_name}"])
    splits = build_splits(job.dataset)
    examples = splits["train"] + splits["val"]
    tokenizer = load_tokenizer(job.model.hf_id)
    encoded = encode_examples(tokenizer, examples, job.model, "truncate")
    unlimited = replace(job.model, max_seq_len=10**9)
    whole = [len(ids) for ids in encode_examples(tokenizer, examples, unlimited, "truncate").input_ids]
    cut = encoded.n_truncated + encoded.n_rejected
    return {
        "model": model_name,
        "max_seq_len": job.model.max_seq_len,
        "n_traces": len(examples),
        "n_longer_than_max_seq_len": cut,
        "share_longer": round(cut / len(examples), 4),
        "n_tokens_cut": encoded.n_tokens_cut,
        "max_example_len": encoded.max_example_len,
        "mean_tokens": round(float(np.mean(whole)), 1),
        "length_quantiles": {q: int(np.quantile(whole, q / 100)) for q in (10, 50, 90, 99)},
    }


def main() -> None:
    report = [lengths_report(name) for name in PAPER_MODELS]
    text = json.dumps(report, indent=2)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as out:
            out.write(text)
    print(text)


if __name__ == "__main__":
    main()
