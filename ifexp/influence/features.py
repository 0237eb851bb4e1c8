"""Projected per-example gradient features, written to a store on disk in chunks.

A store is a folder with `features.npy` (N x k, float16 or float32, a plain .npy file) and
`ids.json`; the artifact cache (ifexp.cache) keys it by the model weights, the data and the
estimator config, so every job of a sweep reuses it.

Big stores are written and read by rows with plain file reads and writes (`NpyWriter`,
`StoredRows`), never through a memory map: the pages of a mapped file that a process touches
count in its resident set (and in its peak) until it unmaps them, so scanning a 3 GB memmap makes a
3 GB process; read with `pread`, the file sits in the page cache and the process holds one chunk.
`read_store` still opens a memmap, for the small stores of tests and scripts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ifexp.checkpointing import checkpointed, use_checkpointing
from ifexp.distributed import gather_rows, shard, sum_across
from ifexp.influence.capture import LayerRecorder, forward_backward, trainable_linears
from ifexp.influence.project import Projector


class NonFiniteFeatures(FloatingPointError):
    """NaN or Inf in an example's projected gradient; `index` is the example's position."""

    def __init__(self, index: int):
        super().__init__(f"non-finite gradient features for example #{index}")
        self.index = index


def extract_features(
    model: nn.Module,
    rows: Sequence[tuple[list[int], int]],
    projector: Projector,
    collate_fn,
    batch_size: int = 8,
    desc: str = "features",
    compute_dtype: str = "float32",
    gradient_checkpointing: str = "never",
    writer: NpyWriter | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(features (N, k) float32, losses (N,)) for (input_ids, n_prompt_tokens) rows, in order.

    With a `writer` (an (N, k) NpyWriter) each batch's rows go to it as they are computed and
    none are kept: features is None, and memory does not grow with N.

    Each layer is projected as soon as its output gradient arrives in the backward pass
    (capture.LayerRecorder's on_layer), so nothing but the layer in hand is kept beyond what the
    backward pass itself holds. gradient_checkpointing is train.gradient_checkpointing's setting
    (auto: on when the longest row has ifexp.checkpointing.AUTO_MIN_TOKENS tokens or more); it cannot
    change the features.

    In a multi-process run (ifexp.distributed) each process takes a contiguous shard of whole
    batches and every process returns all N rows (with a writer: writes its own rows at their
    place in the file); K-FAC statistics are summed over shards.
    """
    longest = max((len(ids) for ids, _ in rows), default=0)
    start_row, stop_row = shard(len(rows), batch_size)
    offset, rows = start_row, rows[start_row:stop_row]
    layers = trainable_linears(model)
    if not layers:
        raise ValueError("the model has no trainable Linear layers to take gradients of")
    index = {name: position for position, name in enumerate(layers)}
    parts: dict[str, torch.Tensor] = {}

    def project(name: str, inputs: torch.Tensor, grads: torch.Tensor) -> None:
        with torch.no_grad():
            parts[name] = projector.project_layer(index[name], name, inputs, grads, recorder.token_mask)

    recorder = LayerRecorder(layers, on_layer=project)
    model.eval()  # no dropout: the gradient is that of the deterministic loss
    device = next(model.parameters()).device
    features = np.empty((0 if writer else len(rows), projector.k), dtype=np.float32)
    losses = np.empty(len(rows), dtype=np.float32)
    with checkpointed(model, use_checkpointing(gradient_checkpointing, longest)):
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False):
            batch = {name: t.to(device) for name, t in collate_fn(list(rows[start : start + batch_size])).items()}
            batch_losses = forward_backward(model, recorder, batch, compute_dtype)
            with torch.no_grad():
                phi = projector.join([parts.pop(name) for name in layers], recorder.token_mask).cpu()
            if not torch.isfinite(phi).all():
                bad = start + int((~torch.isfinite(phi).all(dim=1)).nonzero()[0, 0])
                raise NonFiniteFeatures(offset + bad)
            if writer:
                writer.write(offset + start, phi.numpy())
            else:
                features[start : start + len(batch_losses)] = phi.numpy()
            losses[start : start + len(batch_losses)] = batch_losses.cpu().numpy()
    recorder.clear()
    if getattr(projector, "input_cov", None):
        for stats in (projector.input_cov, projector.grad_cov):
            sum_across(stats)
            stats.update({name: value.cpu() for name, value in stats.items()})
    return (None if writer else gather_rows(features)), gather_rows(losses)


def write_store(
    folder: Path, ids: Sequence[str], features: np.ndarray | None, dtype: str = "float32", projector=None
) -> None:
    """ids.json, the K-FAC factors a Kronecker projector gathered (for the kfac estimator) and the
    features, written in chunks of rows (features None: features.npy was written by an NpyWriter)."""
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(projector, "input_cov", None):
        torch.save({"input_cov": projector.input_cov, "grad_cov": projector.grad_cov}, folder / "kfac_factors.pt")
    if features is not None:
        writer = NpyWriter(folder / "features.npy", features.shape, dtype)
        for start in range(0, len(features), WRITE_ROWS):
            writer.write(start, features[start : start + WRITE_ROWS])
        writer.close()
    (folder / "ids.json").write_text(json.dumps(list(ids)))


def read_kfac_factors(folder: Path) -> dict | None:
    path = folder / "kfac_factors.pt"
    return torch.load(path) if path.is_file() else None


def read_store(folder: Path) -> tuple[list[str], np.ndarray]:
    """(ids, features as a read-only memmap): for small stores (see the module's docstring)."""
    return json.loads((folder / "ids.json").read_text()), np.load(folder / "features.npy", mmap_mode="r")


def store_rows(folder: Path) -> StoredRows:
    """A store's features, read by rows (for stores too big to hold or to map)."""
    return StoredRows(folder / "features.npy")


# rows per write of an in-memory array
WRITE_ROWS = 4096


def npy_header(shape: tuple[int, ...], dtype) -> bytes:
    """The header of a C-ordered .npy file of this shape and dtype (what np.save writes)."""
    import io

    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    buffer = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buffer, header)
    except ValueError:  # a header over 64 KiB
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


class NpyWriter:
    """A 2-D .npy file of a known shape, written by rows at any place (os.pwrite), so several
    processes can each write their own rows of one file. Every process computes the same header
    (its length is the data's offset); the process that creates the file (`header=True`) writes it."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype, header: bool = True):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        head = npy_header(self.shape, self.dtype)
        self.offset, self.row_bytes = len(head), self.shape[1] * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        if header:
            os.pwrite(self.fd, head, 0)
            os.ftruncate(self.fd, self.offset + self.shape[0] * self.row_bytes)

    def write(self, start: int, rows: np.ndarray) -> None:
        """rows (n, k), cast to the file's dtype, as rows start .. start + n."""
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or start + len(rows) > self.shape[0]:
            raise ValueError(f"rows {start}..{start + len(rows)} of shape {rows.shape} do not fit {self.shape}")
        data = memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B")
        position = self.offset + start * self.row_bytes
        while data:
            written = os.pwrite(self.fd, data, position)
            data, position = data[written:], position + written

    def write_columns(self, start: int, columns: np.ndarray) -> None:
        """columns (rows of the file, n): the values of columns start .. start + n of every row
        (one os.pwrite per row: a block of another matrix written transposed)."""
        if columns.shape[0] != self.shape[0] or start + columns.shape[1] > self.shape[1]:
            raise ValueError(f"columns {start}.. of shape {columns.shape} do not fit {self.shape}")
        columns = np.ascontiguousarray(columns, dtype=self.dtype)
        for row in range(self.shape[0]):
            data = memoryview(columns[row]).cast("B")
            position = self.offset + row * self.row_bytes + start * self.dtype.itemsize
            while data:
                written = os.pwrite(self.fd, data, position)
                data, position = data[written:], position + written

    def close(self) -> None:
        os.close(self.fd)


class StoredRows:
    """The rows of a 2-D C-ordered .npy file, read by slices with os.preadv (no memory map):
    `rows[a:b]` is a new (b - a, k) array; np.asarray(rows) reads them all."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as file:
            formats = np.lib.format
            version = formats.read_magic(file)
            read_header = formats.read_array_header_1_0 if version == (1, 0) else formats.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(file)
            self.offset = file.tell()
        if len(shape) != 2 or fortran_order:
            raise ValueError(f"{path}: expected a C-ordered 2-D array, found shape {shape}")
        self.shape = tuple(shape)
        self.row_bytes = self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("StoredRows reads contiguous slices of rows only")
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
        buffer, position = memoryview(out).cast("B"), self.offset + start * self.row_bytes
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while buffer:
                got = os.preadv(fd, [buffer], position)
                if got == 0:
                    raise EOFError(f"{self.path}: shorter than its header says")
                buffer, position = buffer[got:], position + got
        finally:
            os.close(fd)
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self[:]
        return array if dtype is None else array.astype(dtype)
