"""Reading an offline W&B run's folder (wandb/offline-run-*/) as `wandb sync` would upload it.

wandb 0.31 writes no wandb-summary.json offline; its run-<id>.wandb file is a LevelDB-style log of
protobuf `Record`s (a 7-byte header, then 32 KiB blocks of records: crc32 (4), length (2), type (1),
data; a record split across blocks is FIRST, MIDDLE..., LAST), read here with wandb's own protobuf
classes."""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

HEADER = 7
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    """Every protobuf Record in a .wandb file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    out, pending, offset = [], b"", HEADER
    while offset + 7 <= len(data):
        if BLOCK - offset % BLOCK < 7:  # the block's tail is padding
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def run_record(folder: Path):
    """The RunRecord (display_name, run_group, job_type, ...) of an offline run folder."""
    (wandb_file,) = folder.glob("run-*.wandb")
    return next(r.run for r in records(wandb_file) if r.WhichOneof("record_type") == "run")


def tables(folder: Path, name: str) -> list[dict]:
    """The W&B Tables logged under `name`: {"columns": [...], "data": [[...], ...]} each."""
    return [
        json.loads(p.read_text()) for p in sorted((folder / "files" / "media" / "table").glob(f"{name}_*.table.json"))
    ]
