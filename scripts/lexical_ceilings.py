"""The lexical ceiling of each flaw family of a job's training set, without any model: how well a
bag-of-n-grams classifier on the trace text alone finds the flawed traces (ifexp.selection.lexical;
above 0.8 a family is a format, not a reasoning flaw).

    .venv/bin/python scripts/lexical_ceilings.py [--data-seeds 100 101 102] [HYDRA OVERRIDES]

e.g. `dataset.flaw_kinds=[slip_not_carried,cancelling_errors,wrong_fact_not_carried]
dataset.flaw_fraction=0.2`. Prints one JSON line per data seed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from ifexp.cli import compose_job
from ifexp.data import build_splits
from ifexp.selection.lexical import lexical_ceilings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[100, 101, 102])
    args, overrides = parser.parse_known_args()
    cfg = compose_job(["logger=none", *overrides])
    for seed in args.data_seeds:
        train = build_splits(replace(cfg.dataset, data_seed=seed))["train"]
        ceilings = lexical_ceilings([e.cot for e in train], [e.flaw for e in train])
        n_flawed = sum(bool(e.flaw) for e in train)
        row = {"data_seed": seed, "n_train": len(train), "n_flawed": n_flawed}
        print(json.dumps(row | {key.removeprefix("flaw/"): round(value, 3) for key, value in ceilings.items()}))


if __name__ == "__main__":
    main()
