import torch

from ifexp.models import load_model, load_tokenizer
from ifexp.prompts import encode_example, prompt_ids
from ifexp.schema import TrainConfig
from ifexp.train import collate, encode_examples, finetune


def test_tiny_tokenizer_has_chatml_template(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    ids = prompt_ids(tokenizer, "What is 2+2?")
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\nWhat is 2+2?")
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"


def test_encode_masks_prompt_and_ends_with_end_of_turn(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    ids, n_prompt, truncated = encode_example(tokenizer, "What is 2+2?", "2+2=4\n#### 4", max_len=256)
    assert not truncated and ids[-1] == tokenizer.eos_token_id
    assert ids[:n_prompt] == prompt_ids(tokenizer, "What is 2+2?")
    assert tokenizer.decode(ids[n_prompt:-1]) == "2+2=4\n#### 4"
    cut, _, truncated = encode_example(tokenizer, "What is 2+2?", "2+2=4\n" * 200, max_len=64)
    assert truncated and len(cut) == 64


def test_collate_labels_only_response_tokens():
    # pad id 2 equals the end-of-turn id: the mask must come from lengths, not from the pad id.
    batch = collate([([5, 6, 7, 2], 2), ([5, 6, 9, 9, 9, 2], 3)], pad_id=2)
    assert batch["labels"].tolist() == [[-100, -100, 7, 2, -100, -100], [-100, -100, -100, 9, 9, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]


def test_overlong_examples_are_truncated_or_rejected(tiny_model, tiny_model_cfg, small_splits):
    from dataclasses import replace

    tokenizer = load_tokenizer(tiny_model)
    short = replace(tiny_model_cfg, max_seq_len=96)
    truncated = encode_examples(tokenizer, small_splits["train"], short, "truncate")
    rejected = encode_examples(tokenizer, small_splits["train"], short, "reject")
    assert truncated.n_truncated > 0 and rejected.n_truncated == 0
    assert rejected.n_rejected >= truncated.n_truncated
    assert len(rejected.input_ids) == len(small_splits["train"]) - rejected.n_rejected


def _lora_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "weights" / "adapter_model.safetensors"))


def test_lora_finetune_learns_and_is_deterministic(tiny_model, tiny_model_cfg, small_splits, tmp_path):
    from dataclasses import replace

    # The random tiny model's small lm_head caps how far attention-only LoRA can move the loss.
    model_cfg = replace(tiny_model_cfg, lora_targets=["q_proj", "v_proj", "down_proj", "lm_head"])
    cfg = TrainConfig(epochs=6, batch_size=8, lr=1e-2, lora_r=8, lora_alpha=16)
    first = finetune(tiny_model, small_splits["train"], model_cfg, cfg, seed=3, out_dir=tmp_path / "a")
    second = finetune(tiny_model, small_splits["train"], model_cfg, cfg, seed=3, out_dir=tmp_path / "b")
    assert first["final_loss"] < first["first_loss"] - 1.0
    assert first["losses"] == second["losses"]
    a, b = _lora_weights(tmp_path / "a"), _lora_weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The adapter really changes the model.
    model = load_model(tiny_model, adapter=str(tmp_path / "a" / "weights"), merge=True)
    base = load_model(tiny_model)
    ids = torch.tensor([[1, 5, 6, 7]])
    assert not torch.allclose(model(ids).logits, base(ids).logits)


def test_full_finetune_saves_a_loadable_model(tiny_model, tiny_model_cfg, small_splits, tmp_path):
    cfg = TrainConfig(method="full", max_steps=2, batch_size=4, lr=1e-3)
    summary = finetune(tiny_model, small_splits["train"], tiny_model_cfg, cfg, seed=0, out_dir=tmp_path)
    assert summary["steps"] == 2
    model = load_model(str(tmp_path / "weights"))
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == len(load_tokenizer(tiny_model))


def test_length_grouped_batches_cover_every_example_once_per_epoch():
    from ifexp.train import LengthGroupedBatches

    lengths = [(i * 37) % 101 for i in range(50)]
    sampler = LengthGroupedBatches(lengths, batch_size=4, seed=0, group=4)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(50))
        assert len(epoch) == len(sampler) == 13
    assert first != second  # reshuffled each epoch
    assert list(LengthGroupedBatches(lengths, 4, seed=0, group=4)) == first  # seeded
    # within a window, batches are sorted by length: padding is far below random batching
    padded = sum(max(lengths[i] for i in b) * len(b) for b in LengthGroupedBatches(lengths, 4, seed=0))
    assert padded < 1.15 * sum(lengths)
