"""Tests of cervixnet.data.balance: oversampling to a preterm fraction."""

import collections

import pytest

from cervixnet.data.balance import oversample


def test_minority_is_repeated_to_half():
    indices = list(range(100, 120))
    labels = [1, 1, 1] + [0] * 17
    positions, is_copy = oversample(indices, labels, 0.5, seed=0)
    assert positions[:20] == indices and not any(is_copy[:20]) and all(is_copy[20:])
    counts = collections.Counter(labels[indices.index(p)] for p in positions)
    assert counts[1] == counts[0] == 17
    # Each preterm image is used equally often, give or take one.
    uses = collections.Counter(p for p in positions if p < 103)
    assert max(uses.values()) - min(uses.values()) <= 1


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_reaches_the_requested_fraction(fraction):
    labels = [1] * 4 + [0] * 36 + [None] * 3
    positions, _ = oversample(range(len(labels)), labels, fraction, seed=1)
    chosen = [labels[p] for p in positions]
    share = chosen.count(1) / (chosen.count(1) + chosen.count(0))
    assert share == pytest.approx(fraction, abs=0.02)
    assert chosen.count(None) == 3  # unknown labels kept once, never copied


def test_majority_preterm_oversamples_controls():
    labels = [1] * 8 + [0] * 2
    positions, _ = oversample(range(10), labels, 0.5)
    chosen = [labels[p] for p in positions]
    assert chosen.count(0) == chosen.count(1) == 8


def test_already_balanced_or_one_class_adds_nothing():
    assert oversample([0, 1], [0, 1], 0.5) == ([0, 1], [False, False])
    assert oversample([0, 1, 2], [0, 0, None], 0.5) == ([0, 1, 2], [False] * 3)


def test_seed_chooses_the_remainder():
    labels = [1] * 10 + [0] * 45  # 35 copies: three rounds and 5 of the 10 drawn
    a = oversample(range(55), labels, 0.5, seed=0)[0]
    b = oversample(range(55), labels, 0.5, seed=0)[0]
    c = oversample(range(55), labels, 0.5, seed=5)[0]
    assert a == b and a != c


def test_bad_arguments():
    with pytest.raises(ValueError, match="preterm_fraction=1"):
        oversample([0], [1], 1)
    with pytest.raises(ValueError, match="same length"):
        oversample([0, 1], [1], 0.5)
