"""The prompt: how a question and a trace become the token ids a model trains on, answers and is
scored on. One place, so that training, generation, gradients and perplexity see the same text,
and so that an edit here recomputes exactly the stages that encode a prompt (ifexp.cache).
"""

from __future__ import annotations

INSTRUCTION = "Solve the problem step by step. End with a final line of the form '#### <answer>'."


def user_message(question: str) -> str:
    return f"{question.strip()}\n{INSTRUCTION}"


def prompt_ids(tokenizer, question: str, system_prompt: str | None = None) -> list[int]:
    """Token ids of the chat prompt for a question, ending with the assistant header."""
    messages = [{"role": "user", "content": user_message(question)}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_example(
    tokenizer, question: str, cot: str, max_len: int, system_prompt: str | None = None
) -> tuple[list[int], int, bool]:
    """(input_ids, n_prompt_tokens, truncated): prompt + trace + end-of-turn, cut at max_len.

    The loss of an example is taken over the tokens after the prompt only.
    """
    prompt = prompt_ids(tokenizer, question, system_prompt)
    response = tokenizer(cot, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt + response
    return ids[:max_len], len(prompt), len(ids) > max_len
