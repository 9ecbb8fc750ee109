"""Class balance by oversampling: repeat the rarer class until it makes up a chosen fraction.

With about 10 % preterm images, the paper brings the training set to 50:50 by adding
augmented copies of preterm images. :func:`oversample` chooses the copies; the tf.data
pipeline augments them (every training image is augmented afresh each epoch, and in the
paper's evaluation protocol the copies in validation and test are augmented once, with a
fixed seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EVAL_PROTOCOLS = ("original", "paper")


def oversample(
    indices: Sequence[int],
    labels: Sequence[int | None],
    preterm_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[list[int], list[bool]]:
    """Adds copies of the rarer class so that preterm images make up ``preterm_fraction``.

    Each image of the rarer class is repeated the same number of times, give or take one
    (the remainder is drawn without replacement with ``seed``). Rows without a label are
    kept once and left out of the count. When the fraction is already reached, nothing is
    added.

    Args:
        indices: record positions, e.g. of one split.
        labels: label of each position in ``indices``: 1 preterm, 0 control, ``None``.
        preterm_fraction: target share of preterm among the labelled images, in (0, 1).
        seed: chooses which images get the extra copy.

    Returns:
        ``(positions, is_copy)``: ``indices`` followed by the copies, and a flag per position
        that is ``True`` for a copy.
    """
    if not 0 < preterm_fraction < 1:
        raise ValueError(
            f"`preterm_fraction` must be in (0, 1). Received: preterm_fraction={preterm_fraction}"
        )
    if len(indices) != len(labels):
        raise ValueError(
            f"`indices` and `labels` must have the same length. Received: {len(indices)} "
            f"and {len(labels)}"
        )
    indices = [int(i) for i in indices]
    preterm = [i for i, y in zip(indices, labels, strict=True) if y == 1]
    control = [i for i, y in zip(indices, labels, strict=True) if y == 0]
    extra: list[int] = []
    if preterm and control:
        current = len(preterm) / (len(preterm) + len(control))
        if current < preterm_fraction:
            wanted = round(preterm_fraction * len(control) / (1 - preterm_fraction))
            extra = _copies(preterm, wanted - len(preterm), seed)
        elif current > preterm_fraction:
            wanted = round((1 - preterm_fraction) * len(preterm) / preterm_fraction)
            extra = _copies(control, wanted - len(control), seed)
    return indices + extra, [False] * len(indices) + [True] * len(extra)


def _copies(pool: list[int], count: int, seed: int) -> list[int]:
    """``count`` positions from ``pool``: whole rounds of it, then a seeded draw of the rest."""
    if count <= 0:
        return []
    rounds, remainder = divmod(count, len(pool))
    rng = np.random.default_rng(seed)
    tail = sorted(rng.choice(pool, size=remainder, replace=False).tolist())
    return pool * rounds + tail
