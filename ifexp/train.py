"""Supervised fine-tuning on CoT traces with Accelerate (+ PEFT LoRA by default).

The loss is the next-token cross-entropy over response tokens only (prompt and padding masked):
next_token_cross_entropy, the one definition of it. Training takes its mean over a batch's response
tokens (response_loss_sum); influence, the signals and the benchmarks take it per example
(per_example_losses, optionally weighted per reasoning step: step_mean_weights). Runs on one CPU,
or across processes/GPUs under `accelerate launch`. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ifexp.checkpointing import enable_checkpointing, use_checkpointing
from ifexp.examples import Example
from ifexp.models import load_model, load_tokenizer
from ifexp.prompts import encode_example
from ifexp.schema import CHOICES, IfexpError, ModelConfig, TrainConfig, expected_one_of

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class EncodedSet:
    input_ids: list[list[int]]
    prompt_lengths: list[int]
    # examples longer than model.max_seq_len: cut to it (kept) or dropped (overlong=reject, or a
    # prompt that alone fills max_seq_len)
    n_truncated: int
    n_rejected: int
    # response tokens cut off the truncated examples, in total (their final answers are lost with them)
    n_tokens_cut: int = 0
    # the longest example before truncation (prompt + trace + end-of-turn): the max_seq_len that
    # would keep every example whole
    max_example_len: int = 0

    def rows(self) -> list[tuple[list[int], int]]:
        """(input_ids, n_prompt_tokens) per example: what collate batches."""
        return list(zip(self.input_ids, self.prompt_lengths, strict=True))


def encode_examples(tokenizer, examples: list[Example], model_cfg: ModelConfig, overlong: str) -> EncodedSet:
    """Token ids of every example; over-long ones truncated or dropped (and counted, with the
    tokens cut and the longest example's length)."""
    if overlong not in CHOICES["train.overlong"]:
        raise IfexpError(expected_one_of("train.overlong", overlong))
    max_len = model_cfg.max_seq_len
    input_ids, prompt_lengths, n_truncated, n_rejected, n_tokens_cut, longest = [], [], 0, 0, 0, 0
    for example in examples:
        # whole first (nothing cut), then cut here: the same ids as encode_example at max_seq_len
        ids, n_prompt, _ = encode_example(
            tokenizer, example.question, example.cot, sys.maxsize, model_cfg.system_prompt
        )
        longest = max(longest, len(ids))
        if len(ids) > max_len:
            if overlong == "reject" or n_prompt >= max_len:
                n_rejected += 1
                continue
            n_truncated += 1
            n_tokens_cut += len(ids) - max_len
            ids = ids[:max_len]
        input_ids.append(ids)
        prompt_lengths.append(n_prompt)
    return EncodedSet(input_ids, prompt_lengths, n_truncated, n_rejected, n_tokens_cut, longest)


def line_break_ids(tokenizer) -> frozenset[int]:
    """The ids of every token whose text contains a line break (they end a reasoning step)."""
    return frozenset(i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i]))


def step_spans(response_ids: list[int], step_end_ids: frozenset[int]) -> list[tuple[int, int]]:
    """(start, stop) of each reasoning step of a response: a step is a line.

    A line ends at a token containing a line break (the last of a run of them, so a blank line is
    no step of its own); the last line ends with the response.
    """
    steps, start = [], 0
    for position, token in enumerate(response_ids):
        next_token = response_ids[position + 1] if position + 1 < len(response_ids) else None
        if token in step_end_ids and next_token not in step_end_ids:
            steps.append((start, position + 1))
            start = position + 1
    if start < len(response_ids):
        steps.append((start, len(response_ids)))
    return steps


def step_mean_weights(response_ids: list[int], step_end_ids: frozenset[int]) -> list[float]:
    """Each response token's weight when every reasoning step counts the same in the loss.

    Each of the S steps (step_spans) weighs 1/S, shared equally by its tokens; the weights sum
    to 1. The mean token loss would let the long steps drown a short one, such as a wrong `#### N`.
    """
    steps = step_spans(response_ids, step_end_ids)
    weights = [0.0] * len(response_ids)
    for first, stop in steps:
        for position in range(first, stop):
            weights[position] = 1.0 / (len(steps) * (stop - first))
    return weights


def collate(
    rows: list[tuple[list[int], int]], pad_id: int, step_end_ids: frozenset[int] | None = None
) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 on the prompt and on padding.

    The pad id equals the end-of-turn id for ChatML models, so the mask comes from the lengths,
    never from comparing with the pad id. With step_end_ids the batch also carries
    `token_weights` (step_mean_weights, aligned with labels) for per_example_losses.
    """
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if step_end_ids is not None:  # only feature extraction asks: training batches stay as they were
        token_weights = torch.zeros((len(rows), width), dtype=torch.float32)
        for row, (ids, n_prompt) in enumerate(rows):
            token_weights[row, n_prompt : len(ids)] = torch.tensor(step_mean_weights(ids[n_prompt:], step_end_ids))
        batch["token_weights"] = token_weights
    return batch


class LengthGroupedBatches:
    """Seeded batches of indices whose examples have similar lengths, reshuffled every epoch.

    Shuffle, cut into windows of `group` batches, sort each window by length and cut it into
    batches, then shuffle the batch order: padding shrinks (29% of the tokens were padding with
    random batches of the default data) while every epoch still sees a random order.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: int = 16):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        window = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]


def next_token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "none"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-entropy of each next-token prediction of a response token, in float32, and the
    (B, T-1) mask of those tokens: the one loss of training and of influence.

    Position t predicts labels[:, t + 1]; labels are IGNORE_INDEX off the response. reduction
    "none": (B, T-1) token losses, 0 off the response; "sum": their sum, one scalar (summed by
    cross_entropy itself, as training always did).
    """
    shifted_labels = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )
    if reduction == "none":
        losses = losses.view(shifted_labels.shape)
    return losses, shifted_labels != IGNORE_INDEX


def response_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropies over response tokens, number of those tokens): what
    finetune divides into the mean over a batch's response tokens."""
    loss_sum, on_response = next_token_cross_entropy(logits, labels, "sum")
    return loss_sum, on_response.sum()


def per_example_losses(
    logits: torch.Tensor, labels: torch.Tensor, token_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) mean next-token cross-entropy over each example's response tokens.

    token_weights (B, T), aligned with labels and zero off the response (collate's, with
    estimator.loss_weighting=step_mean): the weighted sum of the token losses instead of their mean.
    """
    token_losses, on_response = next_token_cross_entropy(logits, labels)
    n_tokens = on_response.sum(dim=1)
    if (n_tokens == 0).any():
        raise ValueError("an example has no response tokens: its loss is undefined")
    if token_weights is not None:
        return (token_losses * token_weights[:, 1:]).sum(dim=1)
    return token_losses.sum(dim=1) / n_tokens


def apply_lora(model, model_cfg: ModelConfig, train_cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=train_cfg.lora_r,
        lora_alpha=train_cfg.lora_alpha,
        lora_dropout=train_cfg.lora_dropout,
        target_modules=list(model_cfg.lora_targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def finetune(
    base_path: str,
    examples: list[Example],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    seed: int,
    out_dir: str | Path,
) -> dict:
    """Fine-tune base_path on the examples; save the LoRA adapter (or full weights) into out_dir."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    if train_cfg.method not in CHOICES["train.method"]:
        raise IfexpError(expected_one_of("train.method", train_cfg.method))
    # split_batches: each of P processes takes 1/P of every batch, so P processes take the same
    # optimizer steps on the same batches as one process does.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_cfg.grad_accum,
        mixed_precision=train_cfg.mixed_precision,
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    if train_cfg.batch_size % accelerator.num_processes:
        raise IfexpError(
            f"train.batch_size={train_cfg.batch_size} must be a multiple of the {accelerator.num_processes} processes"
        )
    # Same seed in every process before the adapter is created: all ranks start from the same A.
    set_seed(seed)
    tokenizer = load_tokenizer(base_path)
    encoded = encode_examples(tokenizer, examples, model_cfg, train_cfg.overlong)
    if not encoded.input_ids:
        raise IfexpError("no training examples left after dropping over-long sequences")
    model = load_model(base_path)
    if train_cfg.method == "lora":
        model = apply_lora(model, model_cfg, train_cfg)
    model.train()

    rows = encoded.rows()
    lengths = [len(ids) for ids in encoded.input_ids]
    checkpointing = use_checkpointing(train_cfg.gradient_checkpointing, max(lengths))
    if checkpointing:
        log.info("fine-tune: gradient checkpointing on (%d decoder layers)", enable_checkpointing(model))
    loader = torch.utils.data.DataLoader(
        rows,
        batch_sampler=LengthGroupedBatches(lengths, train_cfg.batch_size, seed)
        if train_cfg.group_by_length
        else torch.utils.data.BatchSampler(
            torch.utils.data.RandomSampler(rows, generator=torch.Generator().manual_seed(seed)),
            train_cfg.batch_size,
            drop_last=False,
        ),
        collate_fn=lambda batch: collate(batch, tokenizer.pad_token_id),
    )
    steps_per_epoch = math.ceil(len(loader) / train_cfg.grad_accum)
    total_steps = train_cfg.max_steps if train_cfg.max_steps > 0 else math.ceil(train_cfg.epochs * steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    warmup = int(train_cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / max(1, warmup)) * max(0.0, 1 - step / max(1, total_steps)),
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    losses: list[float] = []
    step = 0
    progress = tqdm(total=total_steps, desc="fine-tune", disable=not accelerator.is_local_main_process)
    try:  # the bar is closed on an error too, so the error starts its own line
        while step < total_steps:
            for batch in loader:
                with accelerator.accumulate(model):
                    # the logits are not kept past the loss (at long sequences they are the largest tensor)
                    loss_sum, n_tokens = response_loss_sum(
                        model(
                            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
                        ).logits,
                        batch["labels"],
                    )
                    # mean over the whole batch's response tokens (all processes'); DDP averages
                    # the processes' gradients, hence the factor
                    loss = loss_sum * accelerator.num_processes / accelerator.reduce(n_tokens, "sum")
                    if not torch.isfinite(loss):
                        raise IfexpError(f"non-finite training loss ({loss.item()}) at step {step}: lower train.lr")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, train_cfg.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                if accelerator.sync_gradients:
                    step += 1
                    losses.append(accelerator.gather(loss.detach()).mean().item())
                    progress.update(1)
                    progress.set_postfix(loss=f"{losses[-1]:.3f}")
                    if step >= total_steps:
                        break
    finally:
        progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(Path(out_dir) / "weights")
        if train_cfg.method == "full":  # a LoRA adapter uses its base model's tokenizer
            tokenizer.save_pretrained(Path(out_dir) / "weights")
    accelerator.wait_for_everyone()
    return {
        "method": train_cfg.method,
        "steps": step,
        "n_examples": len(rows),
        "n_truncated": encoded.n_truncated,
        "n_rejected": encoded.n_rejected,
        "n_tokens_cut": encoded.n_tokens_cut,
        "max_example_len": encoded.max_example_len,
        "gradient_checkpointing": checkpointing,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-5:]) / max(1, len(losses[-5:])),
        "losses": losses,
    }
