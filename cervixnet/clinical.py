"""A measurement against its reference, and a marker against the image model: agreement, paired
AUC comparison, decision curves and the combined logistic model.

NumPy and scikit-learn only (no Keras, no TensorFlow), for arrays already computed: millimetres
measured on predicted masks and on reference masks, the model's probabilities, a clinical
marker.

Conventions:

- Labels are 0/1 (1 = the positive class, e.g. preterm); a NaN label (unknown outcome) leaves
  its row out, as in ``cervixnet.analysis``.
- Scores compared by AUC (:func:`delong_test`, :func:`compare_predictors`) are oriented so that
  a **higher** score means the positive class is more likely. A measurement whose **low**
  values mean the positive class (a short cervix and preterm birth; a small head circumference
  labelled 1) is negated by the caller, or oriented with :func:`oriented` on a training or
  validation split, never on the split being evaluated.
- In decision curves a case is treated where ``probability >= threshold``, as everywhere in
  cervixnet.

Typical use::

    figures = agreement_with_intervals(hc_predicted_mm, hc_reference_mm, patients)
    _, sign = oriented(val_labels, val_cervical_length)            # -1: short means preterm
    comparison = compare_predictors(
        test_labels, {"model": test_probabilities, "cervical length": sign * test_length},
        test_patients,
    )
    combined = fit_combined(val_labels, {"model": val_probabilities, "length": val_length})
    curves = decision_curve(
        test_labels, {"model": test_probabilities,
                      "model + length": combined.predict_proba(test_features)},
    )
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from cervixnet.analysis import bootstrap_intervals, known_labels
from cervixnet.checks import finite_positive, open_unit_interval
from cervixnet.errors import ConfigError
from cervixnet.fileio import atomic_write_text

__all__ = [
    "AGREEMENT_FIGURES",
    "MIN_FIT_ROWS",
    "CombinedModel",
    "MarkerModels",
    "agreement",
    "agreement_with_intervals",
    "auc_interval",
    "compare_predictors",
    "decision_curve",
    "delong_test",
    "fit_combined",
    "fit_markers",
    "load_combined",
    "load_markers",
    "measurement_figures",
    "net_benefit",
    "oriented",
    "save_combined",
]

# The keys of :func:`agreement`, in the order a table shows them.
AGREEMENT_FIGURES = ("n", "mae", "bias", "sd", "loa_low", "loa_high", "p95_abs")
# The z of the Bland-Altman 95 % limits of agreement.
_LOA_Z = 1.96
# The fewest usable rows (known label, every feature finite) a combined model is fitted on.
MIN_FIT_ROWS = 10


def _z(confidence: float) -> float:
    confidence = open_unit_interval("confidence", confidence)
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


# Agreement of a measurement with its reference


def _paired(**arrays: Any) -> list[np.ndarray]:
    """The keyword arrays as flat float64 arrays of one length, or ValueError naming them."""
    flat = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in arrays.items()}
    if len({a.size for a in flat.values()}) > 1:
        sizes = ", ".join(f"{name}.size={a.size}" for name, a in flat.items())
        raise ValueError(
            f"{' and '.join(f'`{n}`' for n in flat)} must have the same number of entries. "
            f"Received: {sizes}"
        )
    return list(flat.values())


def _pair(measured: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    measured, reference = _paired(measured=measured, reference=reference)
    return measured, reference


def agreement(measured: Any, reference: Any) -> dict[str, float]:
    """How a measurement agrees with its reference (Bland & Altman 1986).

    Only rows where both values are finite count; ``difference = measured - reference``.

    Args:
        measured: Measured values, shape ``(N,)``, in any unit (e.g. mm); NaN where missing.
        reference: Reference values, same shape and unit.

    Returns:
        ``n`` (int, rows used); and floats in the unit of the inputs: ``mae`` (mean absolute
        difference), ``bias`` (mean difference), ``sd`` (sample standard deviation of the
        differences, ddof=1), ``loa_low`` and ``loa_high`` (the 95 % limits of agreement,
        ``bias -/+ 1.96 sd``), ``p95_abs`` (95th percentile of the absolute difference,
        linear interpolation). NaN where undefined: every figure with no row, ``sd`` and the
        limits with one.

    Raises:
        ValueError: If the two arrays differ in size.
    """
    measured, reference = _pair(measured, reference)
    both = np.isfinite(measured) & np.isfinite(reference)
    difference = measured[both] - reference[both]
    n = int(difference.size)
    figures = dict.fromkeys(AGREEMENT_FIGURES[1:], math.nan)
    if n >= 1:
        figures["mae"] = float(np.mean(np.abs(difference)))
        figures["bias"] = float(np.mean(difference))
        figures["p95_abs"] = float(np.percentile(np.abs(difference), 95))
    if n >= 2:
        sd = float(np.std(difference, ddof=1))
        figures["sd"] = sd
        figures["loa_low"] = figures["bias"] - _LOA_Z * sd
        figures["loa_high"] = figures["bias"] + _LOA_Z * sd
    return {"n": n, **figures}


def agreement_with_intervals(
    measured: Any,
    reference: Any,
    groups: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """:func:`agreement` with patient-bootstrap intervals (``analysis.bootstrap_intervals``).

    Rows where either value is not finite are left out before resampling, so every resample
    draws among the patients that have at least one usable row.

    Args:
        measured: Measured values, shape ``(N,)``; NaN where missing.
        reference: Reference values, same shape and unit.
        groups: Patient id of each row, shape ``(N,)``; patients are resampled with all their
            rows.
        n_resamples: Bootstrap resamples, >= 1. Defaults to 1000.
        confidence: Interval coverage, in (0, 1). Defaults to 0.95.
        seed: Seed of the resampling. Defaults to 0.

    Returns:
        ``{figure: {"value", "low", "high"}}`` for every key of :func:`agreement`, in the order
        of ``AGREEMENT_FIGURES``; ``n`` has no interval (``low`` and ``high`` NaN).

    Raises:
        ValueError: On sizes that differ, no usable row, NaN group ids, or
            ``n_resamples``/``confidence`` out of range.
    """
    measured, reference = _pair(measured, reference)
    groups = np.asarray(groups)
    if groups.shape != measured.shape:
        raise ValueError(
            "`groups` must hold one patient id per row. "
            f"Received: groups.shape={groups.shape}, {measured.size} rows"
        )
    both = np.isfinite(measured) & np.isfinite(reference)
    if not both.any():
        raise ValueError(
            "No row where `measured` and `reference` are both finite. "
            f"Received: {measured.size} rows"
        )
    values = agreement(measured[both], reference[both])
    intervals = bootstrap_intervals(
        lambda m, r: {k: v for k, v in agreement(m, r).items() if k != "n"},
        groups[both],
        measured[both],
        reference[both],
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    return {
        key: {
            "value": float(values[key]),
            "low": intervals.get(key, (math.nan, math.nan))[0],
            "high": intervals.get(key, (math.nan, math.nan))[1],
        }
        for key in AGREEMENT_FIGURES
    }


# Receiver operating characteristic: DeLong's test


def _scored(labels: Any, scores: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Checks labels and score arrays; drops NaN labels.

    Returns:
        ``(actual, matrix)``: bool ``(M,)`` (True = positive) and float64 ``(K, M)``, one row
        per score array, for the M rows with a known label; both classes present.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    arrays = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in scores.items()}
    for name, values in arrays.items():
        if values.shape != labels.shape:
            raise ValueError(
                f"`labels` and `{name}` must have the same number of entries. "
                f"Received: labels.size={labels.size}, {name}.size={values.size}"
            )
    known = ~np.isnan(labels)
    labels = labels[known]
    bad = labels[(labels != 0.0) & (labels != 1.0)]
    if bad.size:
        raise ValueError(
            f"`labels` must hold 0, 1 or NaN (unknown). Received: labels with value {bad[0]:g}"
        )
    matrix = np.stack([values[known] for values in arrays.values()])
    for name, row in zip(arrays, matrix, strict=True):
        if not np.isfinite(row).all():
            raise ValueError(
                f"`{name}` must be finite wherever the label is known (leave such rows out "
                f"first). Received: {np.count_nonzero(~np.isfinite(row))} non-finite values"
            )
    actual = labels == 1.0
    n_positive = int(np.count_nonzero(actual))
    if n_positive == 0 or n_positive == actual.size:
        raise ValueError(
            "An AUC needs both classes among the known labels. "
            f"Received: {n_positive} positive and {actual.size - n_positive} negative labels"
        )
    return actual, matrix


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1 along the last axis; tied values share the mean of their ranks."""
    ranks = np.empty(values.shape, dtype=np.float64)
    for index in np.ndindex(values.shape[:-1]):
        _, inverse, counts = np.unique(values[index], return_inverse=True, return_counts=True)
        starts = np.cumsum(counts) - counts
        ranks[index] = (starts + (counts + 1) / 2.0)[inverse.ravel()]
    return ranks


def _delong(actual: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(K,)`` and their DeLong covariance ``(K, K)``, by the midrank algorithm of
    Sun & Xu (2014), O(K M log M).

    The placement value of a positive is the share of negatives it outscores (a tie counts
    one half); that of a negative, the share of positives it is outscored by. The covariance is
    ``S10 / m + S01 / n`` with S10 and S01 the sample covariances (ddof=1) of the placement
    values over the m positives and the n negatives (DeLong et al. 1988).
    """
    positives, negatives = matrix[:, actual], matrix[:, ~actual]
    m, n = positives.shape[1], negatives.shape[1]
    overall = _midranks(np.concatenate([positives, negatives], axis=1))
    within_positives = _midranks(positives)
    within_negatives = _midranks(negatives)
    placement_positive = (overall[:, :m] - within_positives) / n  # V10
    placement_negative = 1.0 - (overall[:, m:] - within_negatives) / m  # V01
    aucs = placement_positive.mean(axis=1)
    undefined = np.full((len(matrix), len(matrix)), np.nan)  # a class of one case
    s10 = np.atleast_2d(np.cov(placement_positive)) if m > 1 else undefined
    s01 = np.atleast_2d(np.cov(placement_negative)) if n > 1 else undefined
    return aucs, s10 / m + s01 / n


def _auc(actual: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of one score array (Mann-Whitney with midranks); NaN with one class."""
    m = int(np.count_nonzero(actual))
    n = actual.size - m
    if m == 0 or n == 0:
        return math.nan
    ranks = _midranks(scores)
    return float((ranks[actual].sum() - m * (m + 1) / 2.0) / (m * n))


def _wald(auc: float, variance: float, z: float) -> tuple[float, float, float]:
    """``(se, low, high)``: ``auc -/+ z * se`` clipped to [0, 1]; NaN for a NaN variance."""
    se = math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else math.nan
    low, high = np.clip([auc - z * se, auc + z * se], 0.0, 1.0).tolist()
    return se, low, high


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def _comparison(aucs: np.ndarray, covariance: np.ndarray, a: int, b: int) -> dict[str, float]:
    difference = float(aucs[a] - aucs[b])
    variance = float(covariance[a, a] + covariance[b, b] - 2.0 * covariance[a, b])
    se = math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else math.nan
    if se != 0.0:  # NaN (a class of one case) stays NaN
        z = difference / se
    else:  # identical placement values: no difference (z 0) or an infinitely sure one
        z = 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
    return {
        "auc_a": float(aucs[a]),
        "auc_b": float(aucs[b]),
        "difference": difference,
        "se": se,
        "z": z,
        "p_value": _two_sided_p(z),
        "var_a": float(covariance[a, a]),
        "var_b": float(covariance[b, b]),
        "covariance": float(covariance[a, b]),
    }


def delong_test(labels: Any, scores_a: Any, scores_b: Any) -> dict[str, float]:
    """Paired DeLong test of two correlated ROC AUCs on the same cases.

    DeLong, DeLong & Clarke-Pearson (1988), computed with the midrank algorithm of Sun & Xu
    (2014); tied scores count one half, so the AUCs equal ``sklearn.metrics.roc_auc_score``.
    Higher scores must mean the positive class (negate a measurement whose low values do).

    Args:
        labels: 0/1 labels, shape ``(N,)``; rows with a NaN label are left out.
        scores_a: Scores of predictor a, shape ``(N,)``, finite where the label is known.
        scores_b: Scores of predictor b on the same rows.

    Returns:
        Floats ``auc_a``, ``auc_b``, ``difference`` (``auc_a - auc_b``), ``se`` (its standard
        error), ``z`` (``difference / se``), ``p_value`` (two-sided, normal), ``var_a``,
        ``var_b`` (each AUC's variance) and ``covariance``; ints ``n_positive`` and
        ``n_negative``. When ``se`` is 0 (e.g. identical predictors), ``z`` is 0 and
        ``p_value`` 1 for a zero difference, and ``z`` is +/-inf and ``p_value`` 0 otherwise.

    Raises:
        ValueError: On sizes that differ, a label other than 0/1/NaN, a non-finite score for a
            known label, or only one class among the known labels.
    """
    actual, matrix = _scored(labels, {"scores_a": scores_a, "scores_b": scores_b})
    aucs, covariance = _delong(actual, matrix)
    n_positive = int(np.count_nonzero(actual))
    return {
        **_comparison(aucs, covariance, 0, 1),
        "n_positive": n_positive,
        "n_negative": int(actual.size) - n_positive,
    }


def auc_interval(labels: Any, scores: Any, confidence: float = 0.95) -> dict[str, float]:
    """ROC AUC with DeLong's standard error and a normal (Wald) interval.

    The interval is ``auc -/+ z * se`` on the AUC scale (no logit transform), clipped to
    [0, 1]; z is the normal quantile of ``confidence`` (1.96 for 0.95).

    Args:
        labels: 0/1 labels, shape ``(N,)``; NaN labels are left out.
        scores: Scores, shape ``(N,)``, higher = positive more likely; finite where the label
            is known.
        confidence: Interval coverage, in (0, 1). Defaults to 0.95.

    Returns:
        Floats ``auc``, ``se``, ``low`` and ``high``.

    Raises:
        ValueError: As :func:`delong_test`, or ``confidence`` out of range.
    """
    z = _z(confidence)
    actual, matrix = _scored(labels, {"scores": scores})
    aucs, covariance = _delong(actual, matrix)
    auc = float(aucs[0])
    se, low, high = _wald(auc, float(covariance[0, 0]), z)
    return {"auc": auc, "se": se, "low": low, "high": high}


def oriented(labels: Any, values: Any) -> tuple[np.ndarray, int]:
    """``values`` or ``-values``, whichever has ROC AUC >= 0.5 on these labels, and the sign.

    Decide the orientation on a training or validation split and apply the sign to the split
    being evaluated (``sign * test_values``): choosing it on the evaluated split itself biases
    that split's AUC upwards.

    Args:
        labels: 0/1 labels, shape ``(N,)``; NaN labels are left out of the choice.
        values: A measurement, shape ``(N,)``; rows with a NaN value are left out of the
            choice and stay NaN in the result.

    Returns:
        ``(sign * values, sign)`` with ``sign`` +1 (kept, also for an AUC of exactly 0.5) or
        -1 (negated); the array is float64 of shape ``(N,)``.

    Raises:
        ValueError: On sizes that differ, a label other than 0/1/NaN, or only one class among
            the rows with a known label and a finite value.
    """
    labels, values = _paired(labels=labels, values=values)
    usable = np.isfinite(values)
    actual, matrix = _scored(labels[usable], {"values": values[usable]})
    sign = 1 if _auc(actual, matrix[0]) >= 0.5 else -1
    return sign * values, sign


def compare_predictors(
    labels: Any,
    predictors: Mapping[str, Any],
    groups: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Each predictor's AUC with two intervals, and DeLong's test for every pair.

    Every score must be oriented so that higher means the positive class (see
    :func:`oriented`), and all predictors are scored on the same rows (the paired design of
    DeLong's test): leave out rows where a predictor is missing before calling.

    Args:
        labels: 0/1 labels, shape ``(N,)``; rows with a NaN label are left out.
        predictors: ``{name: scores}``, each of shape ``(N,)`` and finite where the label is
            known; at least one.
        groups: Patient id of each row, shape ``(N,)``, for the bootstrap.
        n_resamples: Bootstrap resamples of patients, >= 1. Defaults to 1000.
        confidence: Coverage of every interval, in (0, 1). Defaults to 0.95.
        seed: Seed of the resampling. Defaults to 0.

    Returns:
        A JSON-serialisable dict (Python floats and ints; NaN where undefined):

        - ``n``, ``n_positive``, ``n_negative``, ``n_patients`` (rows with a known label);
          ``confidence``;
        - ``predictors``: ``{name: {"auc", "se", "delong_low", "delong_high",
          "bootstrap_low", "bootstrap_high"}}``, the DeLong interval as :func:`auc_interval`,
          the bootstrap one the percentile interval over resamples of patients;
        - ``comparisons``: a list with one dict per pair ``(a, b)``, ``a`` before ``b`` in the
          order of ``predictors``: ``"a"``, ``"b"``, the keys of :func:`delong_test`, and
          ``"bootstrap_low"``/``"bootstrap_high"``, the bootstrap interval of
          ``auc_a - auc_b``.

    Raises:
        ValueError: On no predictor, sizes that differ, invalid labels, non-finite scores for
            known labels, one class, or invalid bootstrap arguments.
    """
    if not predictors:
        raise ValueError("`predictors` must hold at least one {name: scores}. Received: 0")
    z = _z(confidence)
    names = list(predictors)
    actual, matrix = _scored(labels, predictors)
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size != np.asarray(labels).size:
        raise ValueError(
            "`groups` must hold one patient id per row. "
            f"Received: groups.shape={groups.shape}, {np.asarray(labels).size} rows"
        )
    groups = groups[~np.isnan(np.asarray(labels, dtype=np.float64).ravel())]
    aucs, covariance = _delong(actual, matrix)
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names))]

    def statistic(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        values = [_auc(y, row) for row in scores.T]
        figures = {f"auc {k}": v for k, v in enumerate(values)}
        figures.update({f"difference {a} {b}": values[a] - values[b] for a, b in pairs})
        return figures

    intervals = bootstrap_intervals(
        statistic,
        groups,
        actual,
        matrix.T,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    )
    n_positive = int(np.count_nonzero(actual))
    result: dict[str, Any] = {
        "n": int(actual.size),
        "n_positive": n_positive,
        "n_negative": int(actual.size) - n_positive,
        "n_patients": int(np.unique(groups).size),
        "confidence": float(confidence),
        "predictors": {},
        "comparisons": [],
    }
    for k, name in enumerate(names):
        auc = float(aucs[k])
        se, delong_low, delong_high = _wald(auc, float(covariance[k, k]), z)
        low, high = intervals[f"auc {k}"]
        result["predictors"][name] = {
            "auc": auc,
            "se": se,
            "delong_low": delong_low,
            "delong_high": delong_high,
            "bootstrap_low": float(low),
            "bootstrap_high": float(high),
        }
    for a, b in pairs:
        low, high = intervals[f"difference {a} {b}"]
        result["comparisons"].append(
            {
                "a": names[a],
                "b": names[b],
                **_comparison(aucs, covariance, a, b),
                "bootstrap_low": float(low),
                "bootstrap_high": float(high),
            }
        )
    return result


# Decision curves


def _thresholds(thresholds: Any) -> np.ndarray:
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    bad = thresholds[~((thresholds >= 0.0) & (thresholds < 1.0))]
    if thresholds.size == 0 or bad.size:
        raise ValueError(
            "`thresholds` must hold at least one threshold probability in [0, 1). "
            f"Received: {thresholds.size} thresholds"
            + (f", e.g. {bad[0]:g} outside" if bad.size else "")
        )
    return thresholds


def _net_benefit(actual: np.ndarray, probability: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit at each threshold; treated where ``probability >= threshold``."""
    positives = np.sort(probability[actual])
    negatives = np.sort(probability[~actual])
    # Counts of probabilities >= t: all minus those < t.
    tp = positives.size - np.searchsorted(positives, thresholds, side="left")
    fp = negatives.size - np.searchsorted(negatives, thresholds, side="left")
    return (tp - fp * thresholds / (1.0 - thresholds)) / actual.size


def net_benefit(labels: Any, probabilities: Any, thresholds: Any) -> np.ndarray:
    """Net benefit of treating where ``probability >= threshold`` (Vickers & Elkin 2006).

    ``net benefit = TP / n - FP / n * pt / (1 - pt)`` at threshold probability ``pt``, with n
    the number of known labels: the true positives gained, less the false positives weighted
    by the odds at which a clinician is indifferent between treating and not.

    Args:
        labels: 0/1 labels, shape ``(N,)``; NaN labels are left out.
        probabilities: Predicted probabilities in [0, 1], shape ``(N,)``.
        thresholds: Threshold probabilities in [0, 1), shape ``(T,)``.

    Returns:
        Float64 array, shape ``(T,)``.

    Raises:
        ValueError: On invalid labels or probabilities (as ``analysis.known_labels``), or a
            threshold outside [0, 1).
    """
    thresholds = _thresholds(thresholds)
    actual, probability = known_labels(labels, probabilities)
    return _net_benefit(actual, probability, thresholds)


def decision_curve(
    labels: Any, predictors: Mapping[str, Any], thresholds: Any = None
) -> dict[str, Any]:
    """Decision curves of several predictors, with the treat-all and treat-none strategies.

    Args:
        labels: 0/1 labels, shape ``(N,)``; NaN labels are left out.
        predictors: ``{name: probabilities}``, each in [0, 1] with shape ``(N,)``.
        thresholds: Threshold probabilities in [0, 1), shape ``(T,)``. Defaults to None:
            ``np.linspace(0.01, 0.99, 99)``.

    Returns:
        ``thresholds`` (T,); ``net_benefit``, ``{name: (T,)}`` in the order of
        ``predictors`` (see :func:`net_benefit`); ``treat_all`` (T,), everyone treated,
        ``prevalence - (1 - prevalence) * pt / (1 - pt)``; ``treat_none`` (T,), zeros;
        ``prevalence`` (float) and ``n`` (int, known labels).

    Raises:
        ValueError: On no predictor, or as :func:`net_benefit`.
    """
    if not predictors:
        raise ValueError("`predictors` must hold at least one {name: probabilities}. Received: 0")
    thresholds = _thresholds(np.linspace(0.01, 0.99, 99) if thresholds is None else thresholds)
    curves = {}
    for name, probabilities in predictors.items():
        try:
            actual, probability = known_labels(labels, probabilities)
        except ValueError as error:
            raise ValueError(f"predictor {name!r}: {error}") from None
        curves[name] = _net_benefit(actual, probability, thresholds)
    prevalence = float(np.mean(actual))
    return {
        "thresholds": thresholds,
        "net_benefit": curves,
        "treat_all": prevalence - (1.0 - prevalence) * thresholds / (1.0 - thresholds),
        "treat_none": np.zeros_like(thresholds),
        "prevalence": prevalence,
        "n": int(actual.size),
    }


# The combined logistic model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function without overflow; NaN stays NaN."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def _feature_matrix(features: Mapping[str, Any], names: tuple[str, ...]) -> np.ndarray:
    """``(N, len(names))`` float64 columns of ``features`` in the order of ``names``."""
    missing = [name for name in names if name not in features]
    if missing:
        raise ValueError(
            f"The model needs the features {list(names)}. Received: {sorted(features)} "
            f"(missing {missing})"
        )
    columns = [np.asarray(features[name], dtype=np.float64).ravel() for name in names]
    sizes = {name: column.size for name, column in zip(names, columns, strict=True)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Every feature must have one value per row. Received: sizes {sizes}")
    return np.stack(columns, axis=1)


@dataclass(frozen=True)
class CombinedModel:
    """A logistic model on standardised features: ``p = 1 / (1 + exp(-z))`` with
    ``z = intercept + sum_k coefficients[k] * (x_k - means[k]) / scales[k]``.

    Coefficients are per standard deviation of their feature on the fitting data, so their
    sizes compare across features. Predicting needs NumPy only.

    Attributes:
        feature_names: The features, in the order of the other tuples.
        means: Each feature's mean on the fitting rows.
        scales: Each feature's standard deviation (ddof=0) on the fitting rows, > 0.
        coefficients: Log odds ratio per standard deviation of each feature.
        intercept: Log odds at the mean of every feature.
    """

    feature_names: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float

    def __post_init__(self) -> None:
        names = tuple(self.feature_names)
        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError(f"`feature_names` must be >= 1 strings. Received: {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"`feature_names` must be distinct. Received: {names!r}")
        object.__setattr__(self, "feature_names", names)
        for field in ("means", "scales", "coefficients"):
            values = tuple(float(v) for v in getattr(self, field))
            if len(values) != len(names) or not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"`{field}` must hold one finite number per feature ({len(names)}). "
                    f"Received: {values!r}"
                )
            object.__setattr__(self, field, values)
        for name, scale in zip(names, self.scales, strict=True):
            finite_positive(f"scale of {name}", scale)
        intercept = float(self.intercept)
        if not math.isfinite(intercept):
            raise ValueError(f"`intercept` must be finite. Received: intercept={intercept!r}")
        object.__setattr__(self, "intercept", intercept)

    def predict_proba(self, features: Mapping[str, Any]) -> np.ndarray:
        """Probability of the positive class per row.

        Args:
            features: ``{name: values}`` holding every name of ``feature_names`` (others are
                ignored), each of shape ``(N,)``.

        Returns:
            Float64 array, shape ``(N,)``, in [0, 1]; NaN for a row with a NaN feature.

        Raises:
            ValueError: If a feature of the model is missing or the sizes differ.
        """
        matrix = _feature_matrix(features, self.feature_names)
        standardised = (matrix - np.array(self.means)) / np.array(self.scales)
        return _sigmoid(self.intercept + standardised @ np.array(self.coefficients))

    def to_json(self) -> str:
        """The model as indented JSON (every field, ``kind`` "logistic")."""
        payload = {
            "kind": "logistic",
            "feature_names": list(self.feature_names),
            "means": list(self.means),
            "scales": list(self.scales),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
        }
        return json.dumps(payload, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CombinedModel:
        """The model of :meth:`to_json`'s text.

        Raises:
            ValueError: If the text is not such JSON (wrong kind, a missing or invalid field).
        """
        payload = json.loads(text)
        if not isinstance(payload, dict) or payload.get("kind") != "logistic":
            raise ValueError(
                'expected a JSON object with "kind": "logistic". '
                f"Received: {type(payload).__name__}"
                + (f" with kind {payload.get('kind')!r}" if isinstance(payload, dict) else "")
            )
        fields = ("feature_names", "means", "scales", "coefficients", "intercept")
        missing = [field for field in fields if field not in payload]
        if missing:
            raise ValueError(f"missing fields {missing}. Received: fields {sorted(payload)}")
        for field in fields[:-1]:
            if not isinstance(payload[field], list):
                raise ValueError(
                    f"`{field}` must be a list. Received: {type(payload[field]).__name__}"
                )
        try:
            return cls(**{field: payload[field] for field in fields})
        except TypeError as error:
            raise ValueError(str(error)) from None


def fit_combined(labels: Any, features: Mapping[str, Any], *, C: float = 1.0) -> CombinedModel:
    """Fits a logistic model of the labels on several features (e.g. the image model's
    probability and a measurement), with ``sklearn.linear_model.LogisticRegression``.

    Each feature is standardised (mean 0, standard deviation 1 on the fitting rows; stored in
    the model). The fit is ridge (L2) penalised with inverse strength ``C`` on the standardised
    coefficients, the intercept unpenalised (solver lbfgs): C = 1.0, scikit-learn's default,
    shrinks little with a few hundred rows and keeps the coefficients finite when a feature
    separates the classes perfectly; ``C=math.inf`` fits without penalty. Fit on training or
    validation rows, never on those the model is evaluated on.

    Args:
        labels: 0/1 labels, shape ``(N,)``; NaN labels are left out.
        features: ``{name: values}``, at least one, each of shape ``(N,)``; a row with a
            non-finite value in any feature is left out.
        C: Inverse regularisation strength, > 0. Defaults to 1.0.

    Returns:
        A :class:`CombinedModel` over the features in the order of ``features``.

    Raises:
        ValueError: On no feature, sizes that differ, a label other than 0/1/NaN, fewer than
            ``MIN_FIT_ROWS`` usable rows, one class among them, or a feature constant on them.
    """
    if not features:
        raise ValueError("`features` must hold at least one {name: values}. Received: 0")
    unpenalised = isinstance(C, int | float) and math.isinf(C) and C > 0
    C = math.inf if unpenalised else finite_positive("C", C)
    names = tuple(features)
    matrix = _feature_matrix(features, names)
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if labels.size != matrix.shape[0]:
        raise ValueError(
            "`labels` and every feature must have the same number of entries. "
            f"Received: labels.size={labels.size}, features of {matrix.shape[0]} rows"
        )
    bad = labels[~np.isnan(labels) & (labels != 0.0) & (labels != 1.0)]
    if bad.size:
        raise ValueError(
            f"`labels` must hold 0, 1 or NaN (unknown). Received: labels with value {bad[0]:g}"
        )
    usable = ~np.isnan(labels) & np.isfinite(matrix).all(axis=1)
    y, x = labels[usable], matrix[usable]
    n_positive = int(np.count_nonzero(y))
    if y.size < MIN_FIT_ROWS or n_positive in (0, y.size):
        raise ValueError(
            f"A combined model needs >= {MIN_FIT_ROWS} rows with a known label and every "
            "feature finite, of both classes. "
            f"Received: {y.size} such rows, {n_positive} positive"
        )
    means, scales = x.mean(axis=0), x.std(axis=0)
    constant = [name for name, scale in zip(names, scales, strict=True) if not scale > 0.0]
    if constant:
        raise ValueError(
            f"Every feature must vary over the fitting rows. Received: {constant} constant"
        )
    fitted = LogisticRegression(C=C, max_iter=10_000).fit((x - means) / scales, y.astype(int))
    return CombinedModel(
        feature_names=names,
        means=tuple(means.tolist()),
        scales=tuple(scales.tolist()),
        coefficients=tuple(fitted.coef_[0].tolist()),
        intercept=float(fitted.intercept_[0]),
    )


def save_combined(path: str | Path, model: CombinedModel) -> None:
    """Writes ``model`` as JSON to ``path`` atomically (the old file or the new one, never
    half)."""
    atomic_write_text(path, model.to_json())


def load_combined(path: str | Path) -> CombinedModel | None:
    """Reads a model written by :func:`save_combined`; None when ``path`` does not exist.

    Raises:
        ConfigError: naming the file, if it is not such a model (a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return CombinedModel.from_json(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSON and Unicode decoding errors included
        raise ConfigError(f"{path}: not a combined model file ({error})") from None


# The image model's probability, as a feature of the combined model.
PROBABILITY_FEATURE = "probability"


@dataclass(frozen=True)
class MarkerModels:
    """The label predicted from a measurement, alone and with the image model, as fitted on a
    run's validation split (:func:`fit_markers`).

    Attributes:
        measurement: the measurement's output name, e.g. ``"cervical_length_mm"``.
        alone: logistic model on the measurement only (its probabilities order scans as the
            measurement does, in the direction the fit found).
        combined: logistic model on the measurement and the image model's ``probability``.
    """

    measurement: str
    alone: CombinedModel
    combined: CombinedModel

    def predict(self, measured: Any, probability: Any) -> dict[str, np.ndarray]:
        """``{"measurement": p, "combined": p}``, each ``(N,)``; NaN where a value is NaN."""
        features = {self.measurement: measured, PROBABILITY_FEATURE: probability}
        return {
            "measurement": self.alone.predict_proba(features),
            "combined": self.combined.predict_proba(features),
        }

    def save(self, path: str | Path) -> None:
        """Writes the models as JSON to ``path`` atomically (:func:`load_markers` reads it)."""
        atomic_write_text(path, self.to_json())

    def to_json(self) -> str:
        payload = {
            "measurement": self.measurement,
            "alone": json.loads(self.alone.to_json()),
            "combined": json.loads(self.combined.to_json()),
        }
        return json.dumps(payload, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> MarkerModels:
        """The models of :meth:`to_json`'s text; ``ValueError`` for anything else."""
        payload = json.loads(text)
        if not isinstance(payload, dict) or not isinstance(payload.get("measurement"), str):
            raise ValueError('expected a JSON object with a "measurement" name')
        models = {}
        for key in ("alone", "combined"):
            if not isinstance(payload.get(key), dict):
                raise ValueError(f"`{key}` must be a model object. Received: {payload.get(key)!r}")
            models[key] = CombinedModel.from_json(json.dumps(payload[key]))
        return cls(payload["measurement"], models["alone"], models["combined"])


def fit_markers(
    labels: Any, measured: Any, probability: Any, measurement: str, *, C: float = 1.0
) -> MarkerModels:
    """Fits :class:`MarkerModels` (:func:`fit_combined`) on one split's labels, measurements
    (named ``measurement``) and image-model probabilities, each ``(N,)``.

    Raises:
        ValueError: as :func:`fit_combined` (too few usable rows, one class, ...).
    """
    features = {measurement: measured, PROBABILITY_FEATURE: probability}
    alone = fit_combined(labels, {measurement: measured}, C=C)
    return MarkerModels(measurement, alone, fit_combined(labels, features, C=C))


def load_markers(path: str | Path) -> MarkerModels | None:
    """Reads :meth:`MarkerModels.save`'s file; None when ``path`` does not exist.

    Raises:
        ConfigError: naming the file, if it is not such a file.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return MarkerModels.from_json(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ConfigError(f"{path}: not a marker models file ({error})") from None


# The label's three predictors in an evaluation, in the order of its tables.
PREDICTORS = ("measurement", "image", "combined")


def measurement_figures(
    measured: Mapping[str, Any],
    references: Mapping[str, Any],
    patients: Any,
    labels: Any = None,
    probability: Any = None,
    markers: MarkerModels | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The millimetre sections of an evaluation report, JSON-serialisable.

    Args:
        measured: ``{output name: (N,)}`` measurements of the predicted masks.
        references: ``{output name: (N,)}`` reference values (NaN where missing) for those
            measurements that have one, e.g. a manifest's ``head_circumference_mm``.
        patients: ``(N,)`` patient ids, resampled for every interval.
        labels, probability: ``(N,)`` labels (NaN unknown) and the image model's p(label).
        markers: the run's :class:`MarkerModels`, fitted on its validation split.

    Returns:
        ``{"measurements": {name: {"n", "mean", "agreement"?}}}``, with ``agreement`` (the
        :func:`agreement_with_intervals` figures) where a reference is given; and with
        ``markers`` whose measurement was measured and labels of both classes,
        ``"markers"`` (:func:`compare_predictors` of the measurement alone, the image model
        and both, named as :data:`PREDICTORS`, with ``measurement`` and ``left_out``, the
        labelled scans with nothing to measure) and ``"decision_curve"``
        (:func:`decision_curve`, as lists).
    """
    patients = np.asarray(patients)
    report: dict[str, Any] = {"measurements": {}}
    for name, values in measured.items():
        values = np.asarray(values, np.float64)
        finite = np.isfinite(values)
        entry: dict[str, Any] = {
            "n": int(finite.sum()),
            "mean": float(values[finite].mean()) if finite.any() else math.nan,
        }
        reference = references.get(name)
        if reference is not None and np.isfinite(_pair(values, reference)[1]).any():
            entry["agreement"] = agreement_with_intervals(
                values, reference, patients, n_resamples=n_resamples, seed=seed
            )
        report["measurements"][name] = entry
    if markers is None or probability is None or labels is None:
        return report
    if markers.measurement not in measured:
        return report
    probability = np.asarray(probability, np.float64)
    predicted = markers.predict(measured[markers.measurement], probability)
    scores = {"measurement": predicted["measurement"], "image": probability,
              "combined": predicted["combined"]}  # fmt: skip
    labels = np.asarray(labels, np.float64)
    known = ~np.isnan(labels)
    usable = known & np.all([np.isfinite(s) for s in scores.values()], axis=0)
    positives = int(labels[usable].sum())
    if positives in (0, int(usable.sum())):
        return report
    kept = {name: s[usable] for name, s in scores.items()}
    comparison = compare_predictors(
        labels[usable], kept, patients[usable], n_resamples=n_resamples, seed=seed
    )
    report["markers"] = {
        "measurement": markers.measurement,
        "left_out": int(known.sum() - usable.sum()),
        **comparison,
    }
    curves = decision_curve(labels[usable], kept)
    report["decision_curve"] = {
        key: (
            {name: np.asarray(v).tolist() for name, v in value.items()}
            if isinstance(value, Mapping)
            else np.asarray(value).tolist()
        )
        for key, value in curves.items()
    }
    return report
