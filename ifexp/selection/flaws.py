"""How well a removal score finds the flawed examples: precision and recall of what is removed,
AUROC and precision at the flawed count of the ranking, in all, per flaw kind and per flaw family
(ifexp.tasks.FLAW_FAMILY: answer-visible flaws, which an answer check finds, and answer-preserving
ones, where the answer is right and the reasoning is not)."""

from __future__ import annotations

import numpy as np

from ifexp.tasks import FAMILIES, flaw_family


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_n(scores: np.ndarray, positive: np.ndarray) -> float:
    """Of the examples a removal score ranks first, as many as there are positives, the fraction
    that are positive (ties in dataset order, as `select` removes them)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    return float(positive[np.argsort(-np.asarray(scores), kind="stable")[:n_pos]].mean())


def flaw_groups(flaw: list[str]) -> dict[str, np.ndarray]:
    """Each flaw kind, and each flaw family its kinds belong to (ifexp.tasks.FLAW_FAMILY), as a
    mask of its examples."""
    labels = np.asarray(flaw, dtype=object)
    groups = {kind: labels == kind for kind in sorted({f for f in flaw if f})}
    families = np.asarray([flaw_family(f) if f else None for f in flaw], dtype=object)
    groups.update({family: families == family for family in FAMILIES if (families == family).any()})
    return groups


def flaw_aurocs(scores: np.ndarray, flaw: list[str]) -> dict[str, float]:
    """AUROC of a removal score at finding the flawed examples: `all`, and each kind and each flaw
    family (answer_visible, answer_preserving) against the clean examples only."""
    flawed = np.asarray([bool(f) for f in flaw])
    out = {"all": auroc(scores, flawed)}
    for group, members in flaw_groups(flaw).items():
        clean_or_group = members | ~flawed
        out[group] = auroc(scores[clean_or_group], flawed[clean_or_group])
    return out


def flaw_detection(kept: np.ndarray, scores: np.ndarray | None, flaw: list[str]) -> dict[str, float]:
    """Precision and recall of the removed set at finding flawed examples; per kind and per flaw
    family: recall, and from the ranking, AUROC and precision at the flawed count (the first
    |flawed of that group| examples ranked among the group and the clean ones)."""
    flawed = np.asarray([bool(f) for f in flaw])
    if not flawed.any():
        return {}
    removed = ~np.asarray(kept, dtype=bool)
    hits = int((removed & flawed).sum())
    out = {
        "flaw/precision": hits / removed.sum() if removed.any() else float("nan"),
        "flaw/recall": hits / flawed.sum(),
    }
    groups = flaw_groups(flaw)
    for group, members in groups.items():
        out[f"flaw/recall/{group}"] = int((removed & members).sum()) / int(members.sum())
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        aurocs = flaw_aurocs(scores, flaw)
        out["flaw/auroc"] = aurocs.pop("all")
        out.update({f"flaw/auroc/{group}": value for group, value in aurocs.items()})
        out["flaw/precision_at_n"] = precision_at_n(scores, flawed)
        for group, members in groups.items():
            clean_or_group = members | ~flawed
            out[f"flaw/precision_at_n/{group}"] = precision_at_n(scores[clean_or_group], members[clean_or_group])
    return out
