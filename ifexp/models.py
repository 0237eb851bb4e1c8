"""Loading models and tokenizers from a local Hugging Face folder, and what a model to run is.

Every stage and both generation engines open a model from the folder the base_model stage
(ifexp.stages.base_model) prepares, plus the LoRA adapter or the fully fine-tuned weights of an
`sft` artifact (`Checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ifexp.cache import Artifact, config_slice
from ifexp.schema import IfexpError, ModelConfig

# Model config fields no stage after base_model keys: the name, and the hub revision (the base
# model's digest holds the commit it resolved to).
NOT_IN_KEY = ("name", "revision")


def model_slice(model_cfg: ModelConfig) -> dict:
    """The model config as the stages after base_model key it (every field but NOT_IN_KEY)."""
    return config_slice(model_cfg, exclude=NOT_IN_KEY)


@dataclass(frozen=True)
class Checkpoint:
    """A model to generate with or take gradients of: a base model, or one fine-tuned from it
    (a LoRA adapter on the base, or fully fine-tuned weights)."""

    base: Artifact
    sft: Artifact | None = None
    method: str = "lora"

    @property
    def model_path(self) -> str:
        return str(self.base) if self.sft is None or self.method == "lora" else str(self.sft / "weights")

    @property
    def adapter(self) -> str | None:
        return str(self.sft / "weights") if self.sft is not None and self.method == "lora" else None

    @property
    def identity(self) -> dict[str, str | None]:
        """What the model is, for cache keys: the digests of its base and of its fine-tuning."""
        return {"base": self.base.digest, "sft": self.sft.digest if self.sft else None}


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise IfexpError(f"tokenizer at {path} has no chat template: set one or use a chat/instruct model")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    try:
        return dtypes[name]
    except KeyError:
        raise IfexpError(f"dtype '{name}': expected one of {', '.join(dtypes)}") from None


def load_model(path: str, dtype: str = "float32", adapter: str | None = None, merge: bool = False):
    """The causal LM at path, with a LoRA adapter applied when given."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        if merge:
            model = model.merge_and_unload()
    return model


def load_for_gradients(path: str, adapter: str | None = None):
    """A fine-tuned model whose fine-tuned weights are the trainable ones: an adapter's LoRA
    matrices (the base stays frozen), or every weight of a fully fine-tuned model."""
    model = load_model(path, adapter=adapter)
    if adapter:
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
    return model
