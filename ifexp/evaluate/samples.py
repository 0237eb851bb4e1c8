"""What a generation engine returns for one prompt: its samples, each cut at the first end-of-turn
token. Its own module so that the engines (`engines`) and the vLLM worker process
(`vllm_worker`) share it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    # Generation stopped because it reached the token limit (max_new_tokens, or the model length)
    # before an end-of-turn token: the answer may be cut off. vLLM: finish_reason == "length";
    # HF: no end-of-turn token among the max_new_tokens generated.
    length_capped: bool = False


def cut_at_eos(token_ids: list[int], eos_ids: set[int]) -> list[int]:
    """The token ids before the first end-of-turn token (all of them when there is none)."""
    for position, token in enumerate(token_ids):
        if token in eos_ids:
            return token_ids[:position]
    return token_ids
