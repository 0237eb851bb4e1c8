"""The lexical ceiling: a bag-of-n-grams classifier finds a template artifact, not a flaw that
leaves the text looking like every other trace."""

import random

import numpy as np

from ifexp.selection.lexical import FORMAT_AUROC, lexical_ceiling, lexical_ceilings


def traces(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        out.append(
            f"A spider has 8 legs, so {a} spiders have {a} * 8 = {a * 8} legs.\nA cow has 4 legs, so {b} cows "
            f"have {b} * 4 = {b * 4} legs.\n#### {a * 8 + b * 4}"
        )
    return out


def test_a_template_artifact_is_found_and_a_wrong_product_is_not():
    texts = traces(120)
    flagged = np.zeros(120, dtype=bool)
    flagged[::4] = True
    # a format: the flawed traces start with a word no clean one has
    formatted = [f"Total: {t}" if f else t for t, f in zip(texts, flagged, strict=True)]
    assert lexical_ceiling(formatted, flagged) > 0.99
    # a reasoning flaw: one product off by one, in the same words as every clean trace (with
    # products from 80 to 792 no wrong equation repeats; with one-digit counts the classifier
    # learns the few wrong equations there are: small number spaces make slips lexical)
    rng = random.Random(1)
    slipped = []
    for text, f in zip(texts, flagged, strict=True):
        if f:
            lines = text.split("\n")
            head, value = lines[0].rsplit(" = ", 1)
            product = int(value.split()[0])
            lines[0] = f"{head} = {product + rng.choice((-1, 1))} legs."
            text = "\n".join(lines)
        slipped.append(text)
    assert lexical_ceiling(slipped, flagged) < FORMAT_AUROC


def test_ceilings_per_flaw_group_and_none_without_labels():
    texts = traces(60)
    flaw = ["total_first" if i % 3 == 0 else "" for i in range(60)]
    texts = [f"Total: {t}" if f else t for t, f in zip(texts, flaw, strict=True)]
    ceilings = lexical_ceilings(texts, flaw)
    assert ceilings["flaw/lexical_ceiling"] > 0.99 and ceilings["flaw/lexical_ceiling/total_first"] > 0.99
    assert lexical_ceilings(texts, [""] * 60) == {}
