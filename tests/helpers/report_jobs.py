"""A synthetic sweep for the report's figure and W&B tests: finished job folders (config, metrics,
paired generations, removal_scores.csv) of perplexity and Random at three pruning fractions."""

import json

import numpy as np
import yaml

from ifexp.outputs import write_removal_scores
from ifexp.selection.flaws import auroc

BENCH = "gsm"
N_PROBLEMS = 24
N_EXAMPLES = 40
FLAWED = {3, 7, 11, 15, 19, 23, 27, 31}


def write_job(folder, strategy, fraction, seed, solved, random_solved, ranking=None, logger=None):
    """A finished job: its config, metrics, paired generations and (given a ranking) removal_scores.csv."""
    config = {
        "model": {"name": "m"},
        "dataset": {"name": "d"},
        "pruning": {"strategy": strategy, "fraction": fraction},
        "seed": seed,
        **({"logger": logger} if logger else {}),
    }
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "generations").mkdir()
    for arm, solved_ids in (("pruned", solved), ("random", random_solved)):
        lines = [json.dumps({"id": f"p{i}", "correct": [i in solved_ids]}) for i in range(N_PROBLEMS)]
        (folder / "generations" / f"{arm}_{BENCH}.jsonl").write_text("\n".join(lines) + "\n")
    ours, theirs = len(solved) / N_PROBLEMS, len(random_solved) / N_PROBLEMS
    metrics = {"strategy": strategy, "fraction": fraction, "seed": seed, f"pass@1/{BENCH}": ours}
    metrics |= {f"random_pass@1/{BENCH}": theirs, f"delta_vs_random/{BENCH}": ours - theirs}
    if ranking is not None:
        flaw = ["wrong_final_answer" if i in FLAWED else "" for i in range(N_EXAMPLES)]
        removed = np.argsort(-ranking, kind="stable")[: int(fraction * N_EXAMPLES)]
        kept = np.ones(N_EXAMPLES, dtype=bool)
        kept[removed] = False
        write_removal_scores(folder, [f"e{i}" for i in range(N_EXAMPLES)], ranking, kept, flaw)
        metrics["flaw/auroc"] = auroc(ranking, np.array([bool(f) for f in flaw]))
        metrics["flaw/recall"] = float(np.mean([not kept[i] for i in FLAWED]))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def flaw_first_ranking(seed: int) -> np.ndarray:
    """Ranks the flawed examples high, with some noise: a strategy that finds most flaws."""
    rng = np.random.default_rng(seed)
    return np.array([2.0 if i in FLAWED else 0.0 for i in range(N_EXAMPLES)]) + rng.normal(0, 0.8, N_EXAMPLES)


def write_sweep(root, logger=None):
    """perplexity and random at 3 fractions × 2 seeds; perplexity solves more the more it prunes.
    logger: the jobs' logger config (their W&B settings), none by default."""
    for fraction in (0.1, 0.25, 0.5):
        for seed in (0, 1):
            random_solved = set(range(6 + seed))
            ours = set(range(6 + seed + int(20 * fraction)))
            common = (fraction, seed)
            name = f"{fraction}-{seed}"
            random_ranking = np.random.default_rng(seed).random(N_EXAMPLES)
            ranking = flaw_first_ranking(seed)
            write_job(root / f"perplexity-{name}", "perplexity", *common, ours, random_solved, ranking, logger)
            write_job(root / f"random-{name}", "random", *common, random_solved, random_solved, random_ranking, logger)
    return root
