"""Statistics behind the clinician-facing evaluation report: thresholds, figures, intervals.

NumPy, SciPy, scikit-learn and OpenCV only (no Keras, no TensorFlow), for arrays of predictions that
have already been computed (e.g. by ``cervixnet.evaluation.predict_records``).

Conventions:

- Classification: labels are 0/1 (1 = preterm); a NaN label (unknown outcome) leaves its entry
  out. Probabilities lie in [0, 1]. A probability **at or above** the threshold predicts
  preterm (``p >= threshold``), like ``sklearn.metrics.roc_curve``, so a threshold chosen by
  :func:`choose_threshold` reproduces the sensitivity and specificity it reports.
- Segmentation: as in ``cervixnet.metrics``, a truth pixel is positive where > 0.5 and a
  predicted pixel where > ``threshold``, so the Hausdorff distance scores the very masks that
  ``iou_per_image`` and ``dice_per_image`` score.
- Distances: in pixels, or in mm given the pixel spacing (:func:`surface_distances`).
- A ratio whose denominator is 0 (e.g. precision with no predicted positive) is NaN.

Typical use, with the threshold chosen on validation and never on test::

    choice = choose_threshold(val_labels, val_probabilities, rule="youden")
    figures = binary_figures(test_labels, test_probabilities, choice.threshold)
    intervals = bootstrap_intervals(
        lambda y, p: binary_figures(y, p, choice.threshold), test_patients, test_labels,
        test_probabilities,
    )
    iou = cervixnet.metrics.iou_per_image(masks_true, masks_prob)  # reuse, per image
    iou_ci = bootstrap_intervals(
        lambda v: {"iou_mean": v.mean(), "iou_std": v.std()}, patients, iou
    )
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_curve

from cervixnet.checks import open_unit_interval, positive_int, unit_interval
from cervixnet.errors import DataError
from cervixnet.fileio import atomic_write_text
from cervixnet.measure import pixel_spacing

__all__ = [
    "THRESHOLD_RULES",
    "ThresholdChoice",
    "binary_figures",
    "bootstrap_intervals",
    "choose_threshold",
    "hausdorff95",
    "hausdorff95_per_image",
    "load_operating_point",
    "reliability_curve",
    "save_operating_point",
    "surface_distances",
    "threshold_from_predictions",
]

THRESHOLD_RULES = ("youden", "sensitivity", "fpr", "fixed")

# The 4-neighbourhood: a boundary pixel is a mask pixel with a 4-neighbour outside the mask.
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


# Validation helpers


def known_labels(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checks and flattens labels and probabilities; drops NaN labels.

    Returns:
        ``(actual, probability)``: a bool array (True = preterm) and a float64 array, shape
        ``(M,)`` with M >= 1 the number of known labels.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    if labels.shape != probabilities.shape:
        raise ValueError(
            "`labels` and `probabilities` must have the same number of entries. "
            f"Received: labels.size={labels.size}, probabilities.size={probabilities.size}"
        )
    known = ~np.isnan(labels)
    labels, probabilities = labels[known], probabilities[known]
    if labels.size == 0:
        raise ValueError("`labels` must hold at least one known (non-NaN) label. Received: 0")
    bad = labels[(labels != 0.0) & (labels != 1.0)]
    if bad.size:
        raise ValueError(
            f"`labels` must hold 0, 1 or NaN (unknown). Received: labels with value {bad[0]:g}"
        )
    outside = probabilities[~((probabilities >= 0.0) & (probabilities <= 1.0))]
    if outside.size:
        raise ValueError(
            "`probabilities` must lie in [0, 1] (and not be NaN) where the label is known. "
            f"Received: {outside.size} such values, e.g. {outside[0]:g}"
        )
    return labels == 1.0, probabilities


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _auc_and_average_precision(actual: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision, as scikit-learn defines them; both classes present.

    Equal to ``roc_auc_score`` (trapezoids between ROC points, ties as one point) and
    ``average_precision_score`` (sum over thresholds of recall increase times precision), but
    without scikit-learn's input checks, which cost milliseconds per call in a bootstrap.
    """
    order = np.argsort(-probability, kind="stable")
    score = probability[order]
    last_of_ties = np.append(np.flatnonzero(np.diff(score)), score.size - 1)
    tps = np.cumsum(actual[order])[last_of_ties]
    fps = last_of_ties + 1 - tps
    tpr = np.append(0.0, tps / tps[-1])
    fpr = np.append(0.0, fps / fps[-1])
    auc = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0
    average_precision = np.sum(np.diff(tpr) * (tps / (tps + fps)))
    return float(auc), float(average_precision)


# Thresholds


@dataclass(frozen=True)
class ThresholdChoice:
    """An operating threshold and what it reached on the data it was chosen on.

    Attributes:
        threshold: In [0, 1]; a probability >= threshold predicts preterm.
        rule: One of ``THRESHOLD_RULES``.
        target: The rule's target (minimum sensitivity, maximum false positive rate or the
            fixed threshold); None for ``"youden"``.
        sensitivity: TP / (TP + FN) at ``threshold`` on the choosing data.
        specificity: TN / (TN + FP) at ``threshold`` on the choosing data.
    """

    threshold: float
    rule: str
    target: float | None
    sensitivity: float
    specificity: float


def _check_target(rule: str, target: Any) -> float | None:
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"`rule` must be one of {THRESHOLD_RULES}. Received: rule={rule!r}")
    if rule == "youden":
        if target is not None:
            raise ValueError(f"rule='youden' takes no `target`. Received: target={target!r}")
        return None
    if target is None:
        raise ValueError(f"rule={rule!r} needs a `target` in [0, 1]. Received: target=None")
    number = unit_interval("target", target)
    if rule == "sensitivity" and number == 0.0:
        raise ValueError(
            "rule='sensitivity' needs a `target` in (0, 1] (a minimum sensitivity). "
            f"Received: target={target!r}"
        )
    return number


def choose_threshold(
    labels: Any, probabilities: Any, rule: str = "youden", target: float | None = None
) -> ThresholdChoice:
    """Chooses an operating threshold on one split (validation, never test).

    Candidates are the ROC thresholds of ``sklearn.metrics.roc_curve`` (every distinct
    probability), plus "predict no positive": roc_curve's first threshold, ``inf``, becomes 1.0
    when every probability is < 1, and is dropped otherwise (no threshold in [0, 1] then
    predicts no positive).

    Rules:
        ``"youden"``: maximises Youden's J = sensitivity + specificity - 1; among ties, the
            highest threshold (fewest positive predictions). ``target`` must be None.
        ``"sensitivity"``: the highest threshold whose sensitivity >= ``target`` (in (0, 1]).
        ``"fpr"``: the threshold with the largest sensitivity among those whose false positive
            rate <= ``target`` (in [0, 1]); among ties, the highest threshold (lowest rate).
        ``"fixed"``: ``target`` itself (e.g. 0.5).

    Args:
        labels: 0/1 labels (1 = preterm), shape ``(N,)`` or ``(N, 1)``; NaN labels dropped.
        probabilities: Predicted preterm probabilities in [0, 1], same number of entries.
        rule: One of ``THRESHOLD_RULES``. Defaults to "youden".
        target: See the rules. Defaults to None.

    Returns:
        A :class:`ThresholdChoice`; predicted positive means probability >= threshold.

    Raises:
        ValueError: On an unknown rule, a missing, superfluous or out-of-range target, invalid
            labels or probabilities, only one class among the known labels, or (rule "fpr") no
            threshold in [0, 1] meeting the target.
    """
    target = _check_target(rule, target)
    actual, probability = known_labels(labels, probabilities)
    n_positive = int(np.count_nonzero(actual))
    n_negative = actual.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError(
            "Choosing a threshold needs both classes among the known labels. "
            f"Received: {n_positive} positive and {n_negative} negative labels"
        )

    if rule == "fixed":
        predicted = probability >= target
        tp = np.count_nonzero(actual & predicted)
        tn = np.count_nonzero(~actual & ~predicted)
        return ThresholdChoice(
            threshold=target,
            rule=rule,
            target=target,
            sensitivity=float(tp / n_positive),
            specificity=float(tn / n_negative),
        )

    fpr, tpr, thresholds = roc_curve(actual, probability, drop_intermediate=False)
    # Exact integer counts, so that ties in J are ties and targets compare like tp / n_positive.
    tp = np.rint(tpr * n_positive).astype(np.int64)
    fp = np.rint(fpr * n_negative).astype(np.int64)
    thresholds = thresholds.astype(np.float64)  # descending; thresholds[0] predicts none
    if probability.max() < 1.0:
        thresholds[0] = 1.0
    else:
        tp, fp, thresholds = tp[1:], fp[1:], thresholds[1:]

    if rule == "youden":
        index = int(np.argmax(tp * n_negative - fp * n_positive))  # first = highest threshold
    elif rule == "sensitivity":
        index = int(np.argmax(tp / n_positive >= target))  # first = highest threshold reaching it
    else:  # "fpr": feasible thresholds form a prefix, sensitivity grows along it
        feasible = np.flatnonzero(fp / n_negative <= target)
        if feasible.size == 0:
            raise ValueError(
                f"No threshold in [0, 1] reaches a false positive rate <= {target:g}: a "
                "negative has probability 1.0. Received: rule='fpr', "
                f"target={target!r}, lowest rate {fp[0] / n_negative:g}"
            )
        index = int(np.argmax(tp == tp[feasible[-1]]))
    return ThresholdChoice(
        threshold=float(thresholds[index]),
        rule=rule,
        target=target,
        sensitivity=float(tp[index] / n_positive),
        specificity=float((n_negative - fp[index]) / n_negative),
    )


# Figures


# The operating point of a run (operating_point.json)


def threshold_from_predictions(
    labels: np.ndarray, probabilities: np.ndarray, rule: str = "youden", target: float | None = None
) -> ThresholdChoice:
    """``choose_threshold`` on validation predictions, with a user-facing error.

    Raises:
        DataError: no labelled image, or a single class.
    """
    try:
        return choose_threshold(labels, probabilities, rule=rule, target=target)
    except ValueError as error:
        raise DataError(f"cannot choose the operating threshold on validation: {error}") from None


def save_operating_point(path: str | Path, choice: ThresholdChoice) -> None:
    """Writes ``operating_point.json``: threshold, rule, target and what it reached on val."""
    payload = {**dataclasses.asdict(choice), "chosen_on": "val"}
    atomic_write_text(path, json.dumps(payload, indent=2))


def load_operating_point(path: str | Path) -> ThresholdChoice | None:
    """Reads ``operating_point.json``; ``None`` when absent."""
    path = Path(path)
    if not path.is_file():
        return None
    payload = json.loads(path.read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(ThresholdChoice)}
    return ThresholdChoice(**{k: v for k, v in payload.items() if k in fields})


def binary_figures(labels: Any, probabilities: Any, threshold: float) -> dict[str, Any]:
    """Classification figures at one threshold; a probability >= ``threshold`` is positive.

    Args:
        labels: 0/1 labels (1 = preterm), shape ``(N,)`` or ``(N, 1)``; NaN labels dropped.
        probabilities: Predicted preterm probabilities in [0, 1], same number of entries.
        threshold: In [0, 1], e.g. ``choose_threshold(...).threshold`` from validation.

    Returns:
        Floats ``auc`` and ``average_precision`` (equal to scikit-learn's ``roc_auc_score``
        and ``average_precision_score``, computed in NumPy for bootstrap speed; threshold-free),
        ``recall`` (= sensitivity), ``precision``,
        ``specificity``, ``false_positive_rate``, ``f1``, ``accuracy``, ``brier`` (mean squared
        error of the probabilities) and ``threshold``; ints ``n_images``, ``n_positive``,
        ``n_negative``; and ``confusion_matrix`` as ``{"tp", "fp", "tn", "fn"}`` (ints). An
        undefined ratio (zero denominator) is NaN; ``auc`` and ``average_precision`` are NaN
        when only one class is present.

    Raises:
        ValueError: On mismatched lengths, a label other than 0/1/NaN, a probability outside
            [0, 1] for a known label, no known label, or ``threshold`` out of range.
    """
    threshold = unit_interval("threshold", threshold)
    actual, probability = known_labels(labels, probabilities)
    predicted = probability >= threshold
    tp = int(np.count_nonzero(actual & predicted))
    fp = int(np.count_nonzero(~actual & predicted))
    fn = int(np.count_nonzero(actual & ~predicted))
    tn = int(np.count_nonzero(~actual & ~predicted))
    n_positive, n_negative = tp + fn, tn + fp
    auc = average_precision = math.nan
    if n_positive > 0 and n_negative > 0:
        auc, average_precision = _auc_and_average_precision(actual, probability)
    return {
        "auc": auc,
        "average_precision": average_precision,
        "recall": _ratio(tp, n_positive),
        "precision": _ratio(tp, tp + fp),
        "specificity": _ratio(tn, n_negative),
        "false_positive_rate": _ratio(fp, n_negative),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": (tp + tn) / actual.size,
        "brier": float(np.mean(np.square(probability - actual))),
        "threshold": threshold,
        "n_images": int(actual.size),
        "n_positive": n_positive,
        "n_negative": n_negative,
        "confusion_matrix": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def reliability_curve(labels: Any, probabilities: Any, n_bins: int = 10) -> dict[str, Any]:
    """Calibration: observed preterm frequency against mean predicted probability, per bin.

    Bins are uniform on [0, 1]; bin i holds the probabilities in ``(edges[i], edges[i + 1]]``
    and the first bin also holds 0, as ``sklearn.calibration.calibration_curve``.

    Args:
        labels: 0/1 labels (1 = preterm), shape ``(N,)`` or ``(N, 1)``; NaN labels dropped.
        probabilities: Predicted preterm probabilities in [0, 1], same number of entries.
        n_bins: Number of bins, >= 1. Defaults to 10.

    Returns:
        ``bin_edges`` (n_bins + 1,), ``mean_predicted`` (n_bins,), ``observed_frequency``
        (n_bins,), both NaN for an empty bin, ``count`` (n_bins,) ints, and ``brier_score``
        (float, mean squared error of the probabilities).
    """
    n_bins = positive_int("n_bins", n_bins)
    actual, probability = known_labels(labels, probabilities)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], probability)
    count = np.bincount(index, minlength=n_bins)
    sum_predicted = np.bincount(index, weights=probability, minlength=n_bins)
    sum_observed = np.bincount(index, weights=actual.astype(np.float64), minlength=n_bins)
    filled = count > 0
    mean_predicted = np.full(n_bins, np.nan)
    observed = np.full(n_bins, np.nan)
    mean_predicted[filled] = sum_predicted[filled] / count[filled]
    observed[filled] = sum_observed[filled] / count[filled]
    return {
        "bin_edges": edges,
        "mean_predicted": mean_predicted,
        "observed_frequency": observed,
        "count": count,
        "brier_score": float(np.mean(np.square(probability - actual))),
    }


# Bootstrap


def _group_rows(groups: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Returns the number of groups, the rows sorted by group, group sizes and group starts."""
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        raise ValueError("`groups` must not hold NaN (every row needs a patient id).")
    _, group_index = np.unique(groups, return_inverse=True)
    group_index = group_index.ravel()
    order = np.argsort(group_index, kind="stable")
    sizes = np.bincount(group_index)
    starts = np.cumsum(sizes) - sizes
    return sizes.size, order, sizes, starts


def _as_number(key: str, value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"`statistic` must return numbers. Received: key {key!r} with a {type(value).__name__}"
        ) from None


def bootstrap_intervals(
    statistic: Callable[..., Mapping[str, Any]],
    groups: Any,
    *arrays: Any,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals, resampling patients (groups) rather than images.

    Each resample draws as many group ids as there are groups, with replacement, and takes all
    rows of each drawn group (a group drawn twice contributes its rows twice), then calls
    ``statistic(*resampled_arrays)``.

    Args:
        statistic: Maps arrays (rows resampled, same order as ``arrays``) to a dict of numbers,
            e.g. ``lambda y, p: binary_figures(y, p, 0.4)``. None counts as NaN; values that are
            mappings (e.g. ``confusion_matrix``) are left out.
        groups: Patient id of each row, shape ``(N,)``, any sortable type (e.g. str, int).
        *arrays: One or more arrays whose first axis has length N (labels, probabilities,
            per-image IoU...).
        n_resamples: Number of resamples, >= 1. Defaults to 1000.
        confidence: Interval coverage, in (0, 1). Defaults to 0.95 (2.5th to 97.5th percentile).
        seed: Seed of ``numpy.random.default_rng``; equal seeds give equal intervals.
            Defaults to 0.

    Returns:
        ``{key: (low, high)}`` for every key ``statistic`` returned. Resamples where a figure is
        NaN (e.g. AUC of a resample with one class) are skipped for that figure; a figure valid
        in fewer than half of the resamples gets ``(nan, nan)``.

    Raises:
        ValueError: On no array, arrays whose length differs from ``groups``, NaN group ids,
            or ``n_resamples``/``confidence`` out of range.
        TypeError: If ``statistic`` is not callable or does not return a mapping of numbers.
    """
    if not callable(statistic):
        raise TypeError(f"`statistic` must be callable. Received: {type(statistic).__name__}")
    n_resamples = positive_int("n_resamples", n_resamples)
    confidence = open_unit_interval("confidence", confidence)
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(
            f"`groups` must have shape (N,) with N >= 1. Received: shape {groups.shape}"
        )
    if not arrays:
        raise ValueError("`bootstrap_intervals` needs at least one array to resample.")
    arrays = tuple(np.asarray(array) for array in arrays)
    lengths = [array.shape[0] if array.ndim else None for array in arrays]
    if any(length != groups.size for length in lengths):
        raise ValueError(
            "Every array must have as many rows as `groups`. "
            f"Received: groups.size={groups.size}, array lengths {lengths}"
        )

    n_groups, order, sizes, starts = _group_rows(groups)
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for resample in range(n_resamples):
        drawn = rng.integers(0, n_groups, size=n_groups)
        drawn_sizes = sizes[drawn]
        # Position of each output row within its drawn group, plus the group's start.
        offsets = np.arange(drawn_sizes.sum()) - np.repeat(
            np.cumsum(drawn_sizes) - drawn_sizes, drawn_sizes
        )
        rows = order[np.repeat(starts[drawn], drawn_sizes) + offsets]
        result = statistic(*(array[rows] for array in arrays))
        if not isinstance(result, Mapping):
            raise TypeError(
                f"`statistic` must return a dict of numbers. Received: {type(result).__name__}"
            )
        for key, value in result.items():
            if isinstance(value, Mapping):
                continue
            if key not in values:
                values[key] = np.full(n_resamples, np.nan)
            values[key][resample] = _as_number(key, value)

    tail = 50.0 * (1.0 - confidence)
    intervals: dict[str, tuple[float, float]] = {}
    for key, samples in values.items():
        valid = samples[~np.isnan(samples)]
        if 2 * valid.size < n_resamples:
            intervals[key] = (math.nan, math.nan)
        else:
            low, high = np.percentile(valid, [tail, 100.0 - tail])
            intervals[key] = (float(low), float(high))
    return intervals


# Boundary distances


def _check_mask_pair(mask_true: np.ndarray, mask_pred: np.ndarray) -> None:
    if mask_true.ndim != 2 or mask_true.shape != mask_pred.shape or mask_true.size == 0:
        raise ValueError(
            "`mask_true` and `mask_pred` must be non-empty 2-D arrays (H, W) of one shape. "
            f"Received: shapes {mask_true.shape} and {mask_pred.shape}"
        )


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; outside the image counts as outside."""
    mask = mask.astype(np.uint8)
    eroded = cv2.erode(mask, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask > eroded


def _distances_to(
    boundary_from: np.ndarray,
    boundary_to: np.ndarray,
    spacing: tuple[float, float] | None = None,
) -> np.ndarray:
    """Euclidean distance of each pixel of ``boundary_from`` to the nearest of ``boundary_to``,
    in pixels, or in mm with ``spacing`` ``(dy, dx)``."""
    if spacing is not None and spacing[0] != spacing[1]:  # OpenCV's transform is isotropic
        distance = ndimage.distance_transform_edt(~boundary_to, sampling=spacing)
        return distance[boundary_from].astype(np.float64)
    distance = cv2.distanceTransform(
        (~boundary_to).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    scale = 1.0 if spacing is None else spacing[0]
    return distance[boundary_from].astype(np.float64) * scale


def _hausdorff95_binary(truth: np.ndarray, prediction: np.ndarray) -> float:
    if not truth.any() or not prediction.any():
        return math.nan
    boundary_true, boundary_pred = _boundary(truth), _boundary(prediction)
    return float(
        max(
            np.percentile(_distances_to(boundary_true, boundary_pred), 95),
            np.percentile(_distances_to(boundary_pred, boundary_true), 95),
        )
    )


def surface_distances(mask_true: Any, mask_pred: Any, spacing: Any = None) -> tuple[float, float]:
    """The 95th-percentile Hausdorff distance and the average symmetric surface distance.

    Boundaries and distances as :func:`hausdorff95`. The average symmetric surface distance
    (ASSD) is the mean of every boundary pixel's distance to the other mask's boundary, over
    both boundaries together: ``(sum d(T->P) + sum d(P->T)) / (|T| + |P|)``.

    Args:
        mask_true, mask_pred: binary masks ``(H, W)`` of one shape; foreground where > 0.5.
        spacing: None (distances in pixels), or the pixel's size in mm, one number or
            ``(dy, dx)`` (``cervixnet.measure.pixel_spacing``): distances in mm, exact for
            non-square pixels too.

    Returns:
        ``(hd95, assd)`` in pixels of the masks or in mm, rounded to 1e-6; both NaN when
        either mask is empty.

    Raises:
        ValueError: If the masks are not 2-D arrays of one shape.
    """
    mask_true, mask_pred = np.asarray(mask_true), np.asarray(mask_pred)
    _check_mask_pair(mask_true, mask_pred)
    scale = pixel_spacing(spacing)
    truth, prediction = mask_true > 0.5, mask_pred > 0.5
    if not truth.any() or not prediction.any():
        return math.nan, math.nan
    boundary_true, boundary_pred = _boundary(truth), _boundary(prediction)
    forward = _distances_to(boundary_true, boundary_pred, scale)
    backward = _distances_to(boundary_pred, boundary_true, scale)
    hd95 = max(np.percentile(forward, 95), np.percentile(backward, 95))
    assd = (forward.sum() + backward.sum()) / (forward.size + backward.size)
    # OpenCV's parallel distance transform can differ in the last float32 bits between calls:
    # rounded to a millionth of a pixel, a repeated run reports the same figures.
    return round(float(hd95), 6), round(float(assd), 6)


def hausdorff95(mask_true: Any, mask_pred: Any) -> float:
    """Symmetric 95th-percentile Hausdorff distance, in pixels, between two mask boundaries.

    The boundary of a mask is the mask minus its erosion by the 3x3 cross (pixels outside the
    image count as background, so a mask touching the image edge has a boundary there). The
    result is the larger of the two directed 95th percentiles (truth boundary to prediction
    boundary, and back) of exact Euclidean distances (``cv2.distanceTransform``).

    Args:
        mask_true: Binary mask, shape ``(H, W)``; foreground where > 0.5 (bool, 0/1 or 0/255).
        mask_pred: Binary mask of the same shape, same convention.

    Returns:
        A float >= 0: 0.0 for identical masks, NaN when either mask is empty (then undefined;
        average per-image values with ``np.nanmean`` and report how many were NaN).

    Raises:
        ValueError: If the masks are not 2-D arrays of one shape.
    """
    mask_true, mask_pred = np.asarray(mask_true), np.asarray(mask_pred)
    _check_mask_pair(mask_true, mask_pred)
    return _hausdorff95_binary(mask_true > 0.5, mask_pred > 0.5)


def hausdorff95_per_image(masks_true: Any, masks_prob: Any, threshold: float = 0.5) -> np.ndarray:
    """:func:`hausdorff95` of each image, binarised as in ``cervixnet.metrics.iou_per_image``.

    Args:
        masks_true: Masks, shape ``(N, H, W)`` or ``(N, H, W, 1)``; foreground where > 0.5.
        masks_prob: Probabilities or binary masks, same shape; foreground where > ``threshold``.
        threshold: In [0, 1]. Defaults to 0.5.

    Returns:
        Float64 array of shape ``(N,)``, in pixels; NaN where either mask is empty.

    Raises:
        ValueError: If the shapes differ or are not (N, H, W)/(N, H, W, 1), or ``threshold``
            is out of range.
    """
    threshold = unit_interval("threshold", threshold)
    masks_true, masks_prob = np.asarray(masks_true), np.asarray(masks_prob)
    if masks_true.ndim == 4 and masks_true.shape[-1] == 1:
        masks_true = masks_true[..., 0]
    if masks_prob.ndim == 4 and masks_prob.shape[-1] == 1:
        masks_prob = masks_prob[..., 0]
    if masks_true.ndim != 3 or masks_true.shape != masks_prob.shape:
        raise ValueError(
            "`masks_true` and `masks_prob` must have the same shape, (N, H, W) or "
            f"(N, H, W, 1). Received: shapes {np.shape(masks_true)} and {np.shape(masks_prob)}"
        )
    truth, prediction = masks_true > 0.5, masks_prob > threshold
    return np.array(
        [_hausdorff95_binary(t, p) for t, p in zip(truth, prediction, strict=True)],
        dtype=np.float64,
    )
