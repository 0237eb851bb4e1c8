"""A user's plugin written outside the package: a module of one strategy (with a helper module it
imports) and the strategy's YAML, as a researcher keeps them in a project folder of their own."""

from pathlib import Path

STRATEGY = "last_ids_first"
MODULE = "my_lab.strategies"
# what one tiny job needs beyond experiment=smoke: no Random or full arm, no extra benchmark
CHEAP_JOB = [
    "experiment=smoke",
    "pruning.compare_random=false",
    "eval.eval_base=false",
    "eval.eval_full=false",
    "eval.benchmarks=[]",
    "eval.max_new_tokens=8",
]

STRATEGIES_PY = f'''"""A strategy of the lab's own: remove the examples whose ids sort last."""

import numpy as np

from ifexp.selection import Strategy
from my_lab.ranking import rank_of


class LastIdsFirst(Strategy):
    name = "{STRATEGY}"

    def removal_scores(self, cfg, signals, seed):
        return np.asarray(rank_of(signals.ids), dtype=float)
'''

RANKING_PY = """def rank_of(ids):
    order = sorted(ids)
    return [order.index(i) for i in ids]
"""


def write_plugin(project: Path) -> Path:
    """project/my_lab/{__init__,strategies,ranking}.py and project/conf/pruning/<STRATEGY>.yaml;
    returns the conf folder (for hydra.searchpath)."""
    package = project / "my_lab"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "strategies.py").write_text(STRATEGIES_PY)
    (package / "ranking.py").write_text(RANKING_PY)
    conf = project / "conf"
    (conf / "pruning").mkdir(parents=True, exist_ok=True)
    (conf / "pruning" / f"{STRATEGY}.yaml").write_text(f"strategy: {STRATEGY}\nfraction: 0.25\n")
    return conf


def removed_as_expected(selection: dict) -> bool:
    """The plugin's selection: the quarter of the ids that sort last."""
    ids = sorted(selection["kept"] + selection["removed"])
    return sorted(selection["removed"]) == ids[len(ids) - selection["n_removed"] :] and selection["n_removed"] > 0
