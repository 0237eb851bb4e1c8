"""Small CoT data the tiny model can learn, and the overrides that train it on them."""

import json
import random
from pathlib import Path

# Overrides that make the tiny model learn the easy set (full fine-tuning, a few epochs).
EASY_TRAINING = ["dataset=jsonl", "dataset.n_val=16", "train=full", "train.epochs=6", "train.lr=3e-3"]


def write_easy_cot(path: Path, n: int = 60) -> Path:
    """A CoT file (DESIGN.md JSONL contract) a tiny model can half-learn in seconds.

    Three quarters of the answers are 7, so a fine-tuned tiny model that always says 7 gets
    those validation questions right and the rest wrong: both query sets are non-empty.
    Every tenth trace is flawed (its final answer is wrong) and labelled.
    """
    rng = random.Random(0)
    with path.open("w") as handle:
        for i in range(n):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            answer = "7" if i % 4 else str(a + b)
            flaw = "wrong_final_answer" if i % 10 == 3 else ""
            cot = f"We add the numbers.\n#### {'9' if flaw else answer}"
            record = {"id": f"easy-{i}", "question": f"Add {a} and {b}.", "cot": cot, "answer": answer, "flaw": flaw}
            handle.write(json.dumps(record) + "\n")
    return path


def read_records(path: Path) -> list[dict]:
    """The records of a JSONL file (splits, generations)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
