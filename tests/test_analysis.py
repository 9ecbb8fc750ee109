"""Tests of cervixnet.analysis against scikit-learn, SciPy and brute force."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from cervixnet.analysis import (
    ThresholdChoice,
    binary_figures,
    bootstrap_intervals,
    choose_threshold,
    hausdorff95,
    hausdorff95_per_image,
    reliability_curve,
    surface_distances,
)
from cervixnet.metrics import iou_per_image, segmentation_summary


def _scores(seed: int, n: int = 80, decimals: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative probabilities, rounded so that several share a value."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.35).astype(np.float64)
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random(n), 0.0, 0.99).round(decimals)
    return labels, probabilities


def _rates(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, false positive rate) at ``p >= threshold``, by hand."""
    predicted = probabilities >= threshold
    positive = labels == 1
    return predicted[positive].mean(), predicted[~positive].mean()


def _candidates(probabilities: np.ndarray) -> np.ndarray:
    """Every distinct probability, plus 1.0 ("no positive") when all are below 1."""
    return np.union1d(probabilities, [1.0])


# binary_figures


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_figures_agree_with_sklearn(seed: int) -> None:
    labels, probabilities = _scores(seed)
    thresholds = [0.0, 0.25, probabilities[0], probabilities[3], np.median(probabilities), 1.0]
    for threshold in thresholds:
        figures = binary_figures(labels, probabilities, threshold)
        predicted = (probabilities >= threshold).astype(int)  # the documented >= convention
        tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
        expected = {
            "auc": roc_auc_score(labels, probabilities),
            "average_precision": average_precision_score(labels, probabilities),
            "recall": recall_score(labels, predicted, zero_division=np.nan),
            "precision": precision_score(labels, predicted, zero_division=np.nan),
            "specificity": recall_score(labels, predicted, pos_label=0, zero_division=np.nan),
            "false_positive_rate": fp / (fp + tn),
            "f1": f1_score(labels, predicted, zero_division=np.nan),
            "accuracy": accuracy_score(labels, predicted),
            "brier": brier_score_loss(labels, probabilities),
        }
        for key, value in expected.items():
            np.testing.assert_allclose(figures[key], value, rtol=1e-12, err_msg=key)
        assert figures["confusion_matrix"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
        assert (figures["n_images"], figures["n_positive"]) == (labels.size, labels.sum())
        assert figures["threshold"] == threshold
    # At 1.0 nothing is predicted positive: precision is undefined, hence NaN, not an error.
    assert math.isnan(binary_figures(labels, probabilities, 1.0)["precision"])


def test_auc_and_average_precision_match_sklearn_with_ties_and_small_sets() -> None:
    rng = np.random.default_rng(7)
    for trial in range(40):
        n = int(rng.integers(2, 40))
        labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(float)
        labels[: 1 + trial % 2] = [1, 0][: 1 + trial % 2]  # at least one class each way
        if labels.min() == labels.max():
            labels[-1] = 1 - labels[0]
        probabilities = rng.random(n).round(trial % 3)  # 0, 1 or 2 decimals: many ties
        figures = binary_figures(labels, probabilities, 0.5)
        assert figures["auc"] == pytest.approx(roc_auc_score(labels, probabilities), abs=1e-12)
        assert figures["average_precision"] == pytest.approx(
            average_precision_score(labels, probabilities), abs=1e-12
        )


def test_binary_figures_count_a_probability_equal_to_the_threshold_as_positive() -> None:
    labels, probabilities = [0, 1, 1, 0], [0.2, 0.5, 0.7, 0.5]
    figures = binary_figures(labels, probabilities, 0.5)
    assert figures["confusion_matrix"] == {"tp": 2, "fp": 1, "tn": 1, "fn": 0}


def test_binary_figures_give_nan_for_undefined_figures_and_drop_nan_labels() -> None:
    figures = binary_figures([1, 1, np.nan, 1], [0.9, 0.2, 0.5, 0.6], 0.5)
    assert figures["n_images"] == 3
    assert figures["confusion_matrix"] == {"tp": 2, "fp": 0, "tn": 0, "fn": 1}
    for key in ("auc", "average_precision", "specificity", "false_positive_rate"):
        assert math.isnan(figures[key]), key
    assert figures["recall"] == pytest.approx(2 / 3)
    assert figures["precision"] == 1.0


@pytest.mark.parametrize(
    ("labels", "probabilities", "threshold", "message"),
    [
        ([0, 2], [0.1, 0.2], 0.5, "value 2"),
        ([0, 1], [0.1, 1.5], 0.5, "e.g. 1.5"),
        ([0, 1], [0.1, np.nan], 0.5, "not be NaN"),
        ([0, 1, 1], [0.1, 0.2], 0.5, "labels.size=3"),
        ([np.nan], [0.1], 0.5, "known"),
        ([0, 1], [0.1, 0.2], 1.5, "threshold=1.5"),
    ],
)
def test_binary_figures_reject_invalid_input(labels, probabilities, threshold, message) -> None:
    with pytest.raises(ValueError, match=message):
        binary_figures(labels, probabilities, threshold)


# choose_threshold


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_youden_maximises_j_and_prefers_the_higher_threshold_on_ties(seed: int) -> None:
    labels, probabilities = _scores(seed, decimals=1)  # coarse: many ties
    candidates = _candidates(probabilities)
    youden = np.array([np.subtract(*_rates(labels, probabilities, t)) for t in candidates])
    best = candidates[np.isclose(youden, youden.max(), rtol=0, atol=1e-12)].max()
    choice = choose_threshold(labels, probabilities, rule="youden")
    assert choice.threshold == best
    assert (choice.rule, choice.target) == ("youden", None)
    figures = binary_figures(labels, probabilities, choice.threshold)
    assert choice.sensitivity == figures["recall"]
    assert choice.specificity == figures["specificity"]


def test_youden_ties_go_to_the_higher_threshold() -> None:
    # Thresholds 0.8 and 0.3 both reach J = 0.5; 0.8 predicts fewer positives.
    labels = [1, 1, 0, 0, 1, 1, 0, 0]
    probabilities = [0.9, 0.8, 0.7, 0.7, 0.6, 0.3, 0.1, 0.2]
    # At 0.8: sens 0.5, spec 1 -> J 0.5; at 0.3: sens 1, spec 0.5 -> J 0.5.
    assert choose_threshold(labels, probabilities).threshold == 0.8


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 1.0])
def test_sensitivity_rule_meets_its_target_at_the_highest_threshold(seed, target) -> None:
    labels, probabilities = _scores(seed)
    choice = choose_threshold(labels, probabilities, rule="sensitivity", target=target)
    sensitivity, _ = _rates(labels, probabilities, choice.threshold)
    assert choice.sensitivity == sensitivity >= target
    feasible = [
        t for t in _candidates(probabilities) if _rates(labels, probabilities, t)[0] >= target
    ]
    assert choice.threshold == max(feasible)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.0, 0.05, 0.1, 0.3])
def test_fpr_rule_meets_its_target_with_the_largest_sensitivity(seed, target) -> None:
    labels, probabilities = _scores(seed)
    choice = choose_threshold(labels, probabilities, rule="fpr", target=target)
    sensitivity, fpr = _rates(labels, probabilities, choice.threshold)
    assert fpr <= target
    assert choice.specificity == pytest.approx(1 - fpr)
    rates = [(*_rates(labels, probabilities, t), t) for t in _candidates(probabilities)]
    feasible = [(s, t) for s, f, t in rates if f <= target]
    best_sensitivity = max(s for s, _ in feasible)
    assert choice.sensitivity == sensitivity == best_sensitivity
    # Among equally sensitive thresholds, the highest (fewest false positives).
    assert choice.threshold == max(t for s, t in feasible if s == best_sensitivity)


def test_fixed_rule_returns_the_target() -> None:
    labels, probabilities = _scores(0)
    choice = choose_threshold(labels, probabilities, rule="fixed", target=0.5)
    sensitivity, fpr = _rates(labels, probabilities, 0.5)
    assert choice == ThresholdChoice(0.5, "fixed", 0.5, sensitivity, 1 - fpr)


def test_thresholds_stay_in_the_unit_interval() -> None:
    # roc_curve's first threshold is inf ("no positive"); it must come back as 1.0.
    inverted = choose_threshold([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], rule="youden")
    assert inverted.threshold == 1.0
    assert (inverted.sensitivity, inverted.specificity) == (0.0, 1.0)
    assert choose_threshold([1, 0, 0], [0.3, 0.6, 0.9], rule="fpr", target=0).threshold == 1.0
    # With a probability of exactly 1.0, no threshold in [0, 1] predicts no positive.
    assert choose_threshold([1, 0, 0], [1.0, 0.6, 0.2], rule="fpr", target=0).threshold == 1.0
    with pytest.raises(ValueError, match=r"probability 1\.0"):
        choose_threshold([1, 0, 0], [0.3, 1.0, 0.2], rule="fpr", target=0)
    for rule, target in [("youden", None), ("sensitivity", 0.5), ("fpr", 0.2)]:
        labels, probabilities = _scores(5)
        threshold = choose_threshold(labels, probabilities, rule, target).threshold
        assert 0.0 <= threshold <= 1.0


@pytest.mark.parametrize(
    ("labels", "rule", "target", "message"),
    [
        ([1, 1, 1, np.nan], "youden", None, "both classes"),
        ([0, 0, 0, 0], "fixed", 0.5, "both classes"),
        ([0, 1, 0, 1], "sensitivity", None, "needs a `target`"),
        ([0, 1, 0, 1], "fpr", 1.5, "target=1.5"),
        ([0, 1, 0, 1], "sensitivity", 0.0, r"\(0, 1\]"),
        ([0, 1, 0, 1], "youden", 0.5, "no `target`"),
        ([0, 1, 0, 1], "f1", None, "rule='f1'"),
    ],
)
def test_choose_threshold_rejects_invalid_input(labels, rule, target, message) -> None:
    with pytest.raises(ValueError, match=message):
        choose_threshold(labels, [0.1, 0.6, 0.3, 0.8], rule=rule, target=target)


def test_threshold_is_chosen_on_validation_and_only_applied_to_test() -> None:
    val_labels, val_probabilities = _scores(10)
    test_labels, test_probabilities = _scores(11)
    choice = choose_threshold(val_labels, val_probabilities, rule="sensitivity", target=0.9)
    figures = binary_figures(test_labels, test_probabilities, choice.threshold)
    # The choice depends on its inputs only: evaluating test changes nothing, and it is frozen.
    assert choose_threshold(val_labels, val_probabilities, "sensitivity", 0.9) == choice
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.threshold = 0.0  # type: ignore[misc]
    # The test figures are those of the validation threshold, whatever test would have chosen.
    sensitivity, fpr = _rates(test_labels, test_probabilities, choice.threshold)
    assert (figures["recall"], figures["false_positive_rate"]) == (sensitivity, fpr)
    on_test = choose_threshold(test_labels, test_probabilities, "sensitivity", 0.9)
    assert on_test.threshold != choice.threshold
    assert figures["recall"] != on_test.sensitivity


# bootstrap_intervals


def _patients(n_patients: int = 35, seed: int = 0):
    """Two images per patient (~70): patient ids, labels by patient, noisy probabilities."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i:02d}" for i in range(n_patients)], 2)
    labels = np.repeat((np.arange(n_patients) % 3 == 0).astype(float), 2)
    probabilities = np.clip(0.4 * labels + 0.6 * rng.random(labels.size), 0, 1)
    return groups, labels, probabilities


def test_bootstrap_is_deterministic_for_a_seed_and_contains_the_estimate() -> None:
    groups, labels, probabilities = _patients()

    def statistic(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return {"mean": float(p.mean()), "positive_rate": float(y.mean())}

    first = bootstrap_intervals(statistic, groups, labels, probabilities, n_resamples=300, seed=3)
    again = bootstrap_intervals(statistic, groups, labels, probabilities, n_resamples=300, seed=3)
    other = bootstrap_intervals(statistic, groups, labels, probabilities, n_resamples=300, seed=4)
    assert first == again
    assert first != other
    for key, value in statistic(labels, probabilities).items():
        low, high = first[key]
        assert low < value < high, key
    narrow = bootstrap_intervals(
        statistic, groups, labels, probabilities, n_resamples=300, seed=3, confidence=0.5
    )
    assert first["mean"][0] < narrow["mean"][0] < narrow["mean"][1] < first["mean"][1]


def test_bootstrap_of_binary_figures_contains_the_point_figures() -> None:
    groups, labels, probabilities = _patients()
    figures = binary_figures(labels, probabilities, 0.5)
    intervals = bootstrap_intervals(
        lambda y, p: binary_figures(y, p, 0.5), groups, labels, probabilities, n_resamples=200
    )
    assert "confusion_matrix" not in intervals  # a nested dict is left out
    for key in ("auc", "recall", "specificity", "precision", "brier"):
        low, high = intervals[key]
        assert low <= figures[key] <= high, key


def test_bootstrap_of_per_image_iou_from_metrics() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((12, 8, 8)) > 0.5
    noisy = np.where(rng.random(masks.shape) < 0.2, ~masks, masks)
    patients = np.repeat(np.arange(6), 2)
    iou = iou_per_image(masks, noisy)
    intervals = bootstrap_intervals(
        lambda v: {"iou_mean": v.mean(), "iou_std": v.std()}, patients, iou, n_resamples=200
    )
    summary = segmentation_summary(masks, noisy)
    for key in ("iou_mean", "iou_std"):
        assert intervals[key][0] <= summary[key] <= intervals[key][1]


def test_bootstrap_resamples_patients_with_all_their_rows() -> None:
    n_patients = 7
    sizes = [2, 2, 2, 2, 2, 2, 2]
    patient = np.repeat(np.arange(n_patients), sizes)
    groups = np.array([f"id-{p}" for p in patient])[::-1]  # strings, not in row order
    values = patient[::-1].astype(float)  # each patient's 2 rows are identical
    seen: list[np.ndarray] = []

    def statistic(v: np.ndarray) -> dict[str, float]:
        seen.append(v)
        return {"distinct": len(np.unique(v))}

    intervals = bootstrap_intervals(statistic, groups, values, n_resamples=200)
    assert len(seen) == 200
    for v in seen:
        assert v.size == values.size
        assert len(np.unique(v)) <= n_patients
        # Rows of a patient come together: every value appears an even number of times.
        assert all(count % 2 == 0 for count in np.unique(v, return_counts=True)[1])
    assert intervals["distinct"][1] <= n_patients
    # Row-level resampling would split pairs; patient-level never does, even with uneven sizes.
    sizes = np.array([1, 3, 2, 4])
    values = np.repeat(np.arange(4), sizes)
    seen.clear()
    bootstrap_intervals(statistic, values, values, n_resamples=100, seed=1)
    for v in seen:
        ids, counts = np.unique(v, return_counts=True)
        assert np.all(counts % sizes[ids] == 0)
        assert np.sum(counts // sizes[ids]) == sizes.size  # as many patients as there are


def test_bootstrap_skips_nan_resamples_and_gives_nan_when_too_few_are_valid() -> None:
    n_patients = 10  # patient 0 is absent from a resample with probability 0.9**10 = 0.35
    groups = np.arange(n_patients)
    recorded: dict[str, list[float]] = {"common": [], "rare": []}

    def statistic(g: np.ndarray) -> dict[str, float | None]:
        present = bool(np.any(g == 0))
        result = {"common": g.mean() if present else math.nan, "rare": None if present else 1.0}
        recorded["common"].append(result["common"])
        return result

    intervals = bootstrap_intervals(statistic, groups, groups, n_resamples=400, seed=2)
    common = np.array(recorded["common"])
    valid = common[~np.isnan(common)]
    assert 0.5 * 400 <= valid.size < 400
    np.testing.assert_allclose(intervals["common"], np.percentile(valid, [2.5, 97.5]))
    assert all(math.isnan(bound) for bound in intervals["rare"])


def test_bootstrap_auc_skips_one_class_resamples() -> None:
    groups = np.arange(20)
    labels = (groups < 2).astype(float)  # two positive patients: some resamples have none
    probabilities = np.linspace(0.9, 0.1, 20)  # perfectly ranked: AUC 1 whenever defined
    n_positive: list[int] = []

    def statistic(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        n_positive.append(int(y.sum()))
        return binary_figures(y, p, 0.5)

    intervals = bootstrap_intervals(statistic, groups, labels, probabilities, n_resamples=200)
    assert 0 < n_positive.count(0) < 100  # skipped, but few enough to keep an interval
    assert intervals["auc"] == (1.0, 1.0)
    assert intervals["recall"] == (1.0, 1.0)


def test_bootstrap_is_fast_for_simple_statistics_and_binary_figures() -> None:
    groups, labels, probabilities = _patients()  # 35 patients, 70 images
    start = time.perf_counter()
    bootstrap_intervals(lambda p: {"mean": p.mean()}, groups, probabilities, n_resamples=1000)
    bootstrap_intervals(
        lambda y, p: binary_figures(y, p, 0.5), groups, labels, probabilities, n_resamples=1000
    )
    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"arrays": ()}, ValueError, "at least one array"),
        ({"arrays": (np.zeros(3),)}, ValueError, "groups.size=4"),
        ({"confidence": 1.0}, ValueError, "confidence"),
        ({"n_resamples": 0}, ValueError, "n_resamples=0"),
        ({"statistic": "mean"}, TypeError, "callable"),
        ({"statistic": lambda v: [v.mean()]}, TypeError, "list"),
        ({"statistic": lambda v: {"x": "high"}}, TypeError, "'x'"),
        ({"groups": [0.0, 1.0, np.nan, 2.0]}, ValueError, "NaN"),
    ],
)
def test_bootstrap_rejects_invalid_input(kwargs, error, message) -> None:
    arguments = {
        "statistic": lambda v: {"mean": v.mean()},
        "groups": [0, 0, 1, 2],
        "arrays": (np.arange(4.0),),
        "n_resamples": 10,
    } | kwargs
    arrays = arguments.pop("arrays")
    with pytest.raises(error, match=message):
        bootstrap_intervals(
            arguments.pop("statistic"), arguments.pop("groups"), *arrays, **arguments
        )


# hausdorff95


def _disc(center: tuple[int, int], radius: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def _hausdorff95_brute_force(a: np.ndarray, b: np.ndarray) -> float:
    """Boundaries by SciPy erosion (4-neighbourhood, outside = background), distances by cdist."""
    boundary_a = np.argwhere(a & ~ndimage.binary_erosion(a, border_value=0))
    boundary_b = np.argwhere(b & ~ndimage.binary_erosion(b, border_value=0))
    distances = cdist(boundary_a, boundary_b)
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


def test_hausdorff95_of_identical_masks_is_zero() -> None:
    disc = _disc((30, 30), 12)
    assert hausdorff95(disc, disc) == 0.0
    assert hausdorff95(disc.astype(np.uint8) * 255, disc) == 0.0


@pytest.mark.parametrize(("shift", "axis"), [(1, 0), (3, 1), (6, 0), (10, 1)])
def test_hausdorff95_of_a_shifted_disc_is_about_the_shift(shift: int, axis: int) -> None:
    disc = _disc((30, 30), 12)
    shifted = np.roll(disc, shift, axis=axis)
    assert abs(hausdorff95(disc, shifted) - shift) <= 1
    assert hausdorff95(disc, shifted) == hausdorff95(shifted, disc)


def test_hausdorff95_is_nan_when_a_mask_is_empty() -> None:
    disc, empty = _disc((30, 30), 12), np.zeros((64, 64), bool)
    assert math.isnan(hausdorff95(disc, empty))
    assert math.isnan(hausdorff95(empty, disc))
    assert math.isnan(hausdorff95(empty, empty))


@pytest.mark.parametrize("seed", range(6))
def test_hausdorff95_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Smoothed noise gives blobs of several parts, some touching the image edge.
    a = ndimage.gaussian_filter(rng.random((24, 20)), 2) > 0.5
    b = ndimage.gaussian_filter(rng.random((24, 20)), 2) > 0.5
    if not a.any() or not b.any():
        pytest.skip("empty mask")
    assert hausdorff95(a, b) == pytest.approx(_hausdorff95_brute_force(a, b), abs=1e-4)
    assert hausdorff95(a, a) == 0.0


@pytest.mark.parametrize("spacing", [None, 0.2, (0.15, 0.25), (0.3, 0.1)])
@pytest.mark.parametrize("seed", range(3))
def test_surface_distances_in_mm_match_brute_force(seed: int, spacing) -> None:
    """Boundary points scaled by (dy, dx) and measured with cdist: exact for any pixel shape."""
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.random((24, 20)), 2) > 0.5
    b = ndimage.gaussian_filter(rng.random((24, 20)), 2) > 0.5
    if not a.any() or not b.any():
        pytest.skip("empty mask")
    scale = np.ones(2) if spacing is None else np.broadcast_to(np.asarray(spacing, float), 2)
    boundary_a = np.argwhere(a & ~ndimage.binary_erosion(a, border_value=0)) * scale
    boundary_b = np.argwhere(b & ~ndimage.binary_erosion(b, border_value=0)) * scale
    distances = cdist(boundary_a, boundary_b)
    forward, backward = distances.min(axis=1), distances.min(axis=0)
    hd95 = max(np.percentile(forward, 95), np.percentile(backward, 95))
    assd = (forward.sum() + backward.sum()) / (forward.size + backward.size)
    got = surface_distances(a, b, spacing)
    assert got == pytest.approx((hd95, assd), abs=1e-4)
    if spacing is not None:
        in_pixels = surface_distances(a, b)
        assert got != pytest.approx(in_pixels)  # a unit, not a no-op
    with pytest.raises(ValueError, match="Received"):
        surface_distances(a, b, 0.0)


def test_hausdorff95_per_image_binarises_like_metrics() -> None:
    disc = _disc((30, 30), 12)
    truth = np.stack([disc, disc, disc, np.zeros_like(disc)])[..., None].astype(np.float32)
    shifted = np.roll(disc, 4, axis=1)
    probabilities = np.stack([disc * 0.9, shifted * 0.7, disc * 0.3, disc * 0.9])[..., None]
    distances = hausdorff95_per_image(truth, probabilities, threshold=0.5)
    assert distances.shape == (4,) and distances.dtype == np.float64
    assert distances[0] == 0.0
    assert distances[1] == hausdorff95(disc, shifted)
    assert np.isnan(distances[2:]).all()  # prediction below threshold; empty truth
    assert hausdorff95_per_image(truth, probabilities, threshold=0.2)[2] == 0.0
    with pytest.raises(ValueError, match=r"\(4, 64, 64\)"):
        hausdorff95_per_image(truth[..., 0], probabilities[:, :32, :, 0])
    with pytest.raises(ValueError, match="shapes"):
        hausdorff95(disc, disc[:10])


# reliability_curve


def test_reliability_curve_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    probabilities = np.concatenate([0.8 * rng.random(200) ** 2, [0.0, 0.1, 0.5, 0.7, 1.0]])
    labels = (rng.random(probabilities.size) < probabilities).astype(float)
    labels[:3] = np.nan  # dropped
    curve = reliability_curve(labels, probabilities, n_bins=20)
    known = ~np.isnan(labels)
    observed, predicted = calibration_curve(
        labels[known], probabilities[known], n_bins=20, strategy="uniform"
    )
    filled = curve["count"] > 0
    assert not filled.all()  # bins between 0.8 and 0.95 are empty
    np.testing.assert_allclose(curve["observed_frequency"][filled], observed)
    np.testing.assert_allclose(curve["mean_predicted"][filled], predicted)
    assert np.isnan(curve["mean_predicted"][~filled]).all()
    assert np.isnan(curve["observed_frequency"][~filled]).all()
    assert curve["count"].sum() == known.sum()
    np.testing.assert_allclose(curve["bin_edges"], np.linspace(0, 1, 21))
    assert curve["brier_score"] == pytest.approx(
        brier_score_loss(labels[known], probabilities[known])
    )
    with pytest.raises(ValueError, match="n_bins=0"):
        reliability_curve(labels, probabilities, n_bins=0)


def test_binary_figures_reproduce_the_papers_confusion_matrix() -> None:
    # Test set of the paper: control 1105 / 40, preterm 41 / 85 (rows actual).
    labels = np.array([0] * 1145 + [1] * 126)
    probabilities = np.array([0.1] * 1105 + [0.9] * 40 + [0.1] * 41 + [0.9] * 85)
    figures = binary_figures(labels, probabilities, 0.5)
    assert figures["confusion_matrix"] == {"tp": 85, "fp": 40, "tn": 1105, "fn": 41}
    assert figures["recall"] == pytest.approx(85 / 126)
    assert figures["precision"] == pytest.approx(85 / 125)
    assert figures["specificity"] == pytest.approx(1105 / 1145)
