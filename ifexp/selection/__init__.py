"""Pruning strategies: which floor(p * |D|) training examples to remove.

Every strategy is a *removal score* per example (higher = removed first); pruning removes the
top floor(p * |D|). The same score ranks examples for flaw detection (AUROC), so the two can
never disagree. Pure functions over arrays: no model, no Hydra.

- `registry`: `Strategy` (a subclass declares its name, the signals it needs, its options and
  its removal scores, and is registered by being defined), `STRATEGIES`, `removal_scores`, `select`;
- `strategies`: the built-in strategies;
- `flaws`: flaw detection (precision, recall, AUROC), per flaw kind and family.

A new strategy is one Strategy subclass and one conf/pruning/<name>.yaml.
"""

from ifexp.selection import strategies  # noqa: F401  (defining the built-ins registers them)
from ifexp.selection.flaws import auroc, flaw_aurocs, flaw_detection, flaw_groups, precision_at_n
from ifexp.selection.registry import (
    SIGNALS,
    STRATEGIES,
    Signals,
    Strategy,
    choices,
    n_to_remove,
    needed_signals,
    option_values,
    removal_scores,
    select,
    strategy_named,
    strategy_names,
)
from ifexp.selection.strategies import INFLUENCE_STRATEGIES, random_order, zscore

__all__ = [
    "INFLUENCE_STRATEGIES",
    "SIGNALS",
    "STRATEGIES",
    "Signals",
    "Strategy",
    "auroc",
    "choices",
    "flaw_aurocs",
    "flaw_detection",
    "flaw_groups",
    "n_to_remove",
    "needed_signals",
    "option_values",
    "precision_at_n",
    "random_order",
    "removal_scores",
    "select",
    "strategy_named",
    "strategy_names",
    "zscore",
]
