"""The lexical ceiling of a flaw family: how well the trace text alone, as a bag of n-grams, finds
the flawed traces (DESIGN.md "Evidence standards").

A cross-validated logistic regression on word 1- to 3-gram counts (numbers and punctuation kept as
tokens: `Total:`, `*`, `24`) is trained on the flaw labels; its out-of-fold scores' AUROC is the
ceiling. A family it finds at AUROC above `FORMAT_AUROC` (0.8) is a format, not a reasoning flaw:
any text classifier finds it, so finding it says nothing about influence, and it cannot carry a
headline claim.
"""

from __future__ import annotations

import numpy as np

from ifexp.selection.flaws import auroc, flaw_groups

FORMAT_AUROC = 0.8
# words, numbers and each punctuation mark as tokens (scikit-learn's default drops 1-character ones)
TOKENS = r"[A-Za-z]+|\d+|[^\sA-Za-z\d]"


def lexical_ceiling(texts: list[str], positive: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold AUROC of a bag-of-n-grams classifier separating the positive texts from the
    others (stratified k-fold, seeded); NaN with fewer than 2 of either class."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    positive = np.asarray(positive, dtype=bool)
    folds = min(folds, int(positive.sum()), int((~positive).sum()))
    if folds < 2:
        return float("nan")
    classifier = make_pipeline(
        CountVectorizer(ngram_range=(1, 3), token_pattern=TOKENS, lowercase=False, binary=True),
        LogisticRegression(C=1.0, max_iter=2000),
    )
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(classifier, list(texts), positive, cv=split, method="predict_proba")[:, 1]
    return auroc(scores, positive)


def lexical_ceilings(texts: list[str], flaw: list[str]) -> dict[str, float]:
    """`flaw/lexical_ceiling` (all flawed traces against the clean ones) and, per flaw kind and
    family, that group against the clean ones only (as flaws.flaw_aurocs pairs them)."""
    flawed = np.asarray([bool(f) for f in flaw])
    if not flawed.any():
        return {}
    out = {"flaw/lexical_ceiling": lexical_ceiling(texts, flawed)}
    for group, members in flaw_groups(flaw).items():
        keep = members | ~flawed
        out[f"flaw/lexical_ceiling/{group}"] = lexical_ceiling(
            [t for t, k in zip(texts, keep, strict=True) if k], flawed[keep]
        )
    return out
