"""Paper-ready figures of an evaluation, drawn with matplotlib (Agg) and scikit-learn's displays.

NumPy, matplotlib and scikit-learn only (no Keras, no TensorFlow). Every function returns a
``matplotlib.figure.Figure`` made without pyplot, so no window opens and nothing global is
touched; :func:`save_figure` writes it as PNG (for ``report.md``) and as vector PDF with its
fonts embedded as TrueType, both byte-identical on a rerun::

    figure = roc_figure(labels, probabilities, threshold=0.42, groups=patient_ids)
    save_figure(figure, "report/roc")   # report/roc.png and report/roc.pdf

The classification figures use one convention for the operating point: a scan is called
preterm when ``probability >= threshold``, as ``cervixnet.analysis.binary_figures`` counts it.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    confusion_matrix,
    roc_curve,
)

from cervixnet.analysis import bootstrap_intervals, known_labels
from cervixnet.clinical import agreement

__all__ = [
    "FORMATS",
    "bland_altman_figure",
    "calibration_figure",
    "confusion_matrix_figure",
    "decision_curve_figure",
    "overlay_figure",
    "precision_recall_figure",
    "read_history",
    "roc_figure",
    "save_figure",
    "training_curves_figure",
]

# Every figure is saved in these formats: a raster for report.md, a vector file for papers.
FORMATS = ("png", "pdf")
# The false-positive rates at which the bootstrap band around the ROC curve is computed.
_BAND_GRID = np.linspace(0.0, 1.0, 101)
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "pdf.fonttype": 42,  # TrueType: text stays text, as journals ask
    "svg.fonttype": "none",
    "svg.hashsalt": "cervixnet",
}
_SAVE_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}
# Names of the preterm class (label 1) and the control class (label 0), as the axes show them.
_CLASS_NAMES = ("control", "preterm")


def _styled(function: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draws the figure under the house style (font sizes are fixed as text is created)."""

    @functools.wraps(function)
    def draw(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(_STYLE):
            return function(*args, **kwargs)

    return draw


def _new_figure(width: float = 4.0, height: float = 3.6) -> Figure:
    """A figure of ``width`` x ``height`` inches at 150 dpi, not attached to pyplot."""
    return Figure(figsize=(width, height), dpi=150, layout="constrained")


def save_figure(figure: Figure, path: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Writes ``figure`` as ``path`` with each suffix in ``formats`` (default PNG and PDF),
    creating the folder.

    No creation date, producer or software version is written, so a rerun gives the same
    bytes; PDF fonts are embedded as TrueType (Type 42).

    Returns:
        The files written, in the order of ``formats``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []

    with matplotlib.rc_context(_STYLE):
        for suffix in formats:
            target = path.with_suffix(f".{suffix}")
            figure.savefig(target, format=suffix, metadata=_SAVE_METADATA.get(suffix))
            written.append(target)
    return written


def _operating_point_label(threshold: float) -> str:
    return f"operating point (p \N{GREATER-THAN OR EQUAL TO} {threshold:.3g})"


@_styled
def roc_figure(
    labels: Any,
    probabilities: Any,
    threshold: float | None = None,
    *,
    groups: Any = None,
    n_resamples: int = 200,
    seed: int = 0,
) -> Figure:
    """ROC curve (``sklearn.metrics.RocCurveDisplay``), with a patient-bootstrap band and the
    operating point.

    Args:
        labels: 0/1 labels (1 = preterm), shape ``(N,)``; NaN labels are dropped.
        probabilities: p(preterm) in [0, 1], shape ``(N,)``.
        threshold: The operating threshold: its point (false- and true-positive rate of
            ``probability >= threshold``) is marked. None: no point.
        groups: Patient id per row, shape ``(N,)``: the 95 % band of the true-positive rate at
            each false-positive rate comes from ``n_resamples`` resamples of patients
            (``cervixnet.analysis.bootstrap_intervals``). None: no band.
        n_resamples: Bootstrap resamples for the band. Defaults to 200.
        seed: Seed of the resampling. Defaults to 0.
    """
    actual, probability = known_labels(labels, probabilities)
    figure = _new_figure()
    axes = figure.add_subplot()
    display = RocCurveDisplay.from_predictions(
        actual, probability, ax=axes, name="ROC", plot_chance_level=True
    )
    display.line_.set_color("C0")
    if groups is not None:
        known = ~np.isnan(np.asarray(labels, float).ravel())
        band = _roc_band(actual, probability, np.asarray(groups)[known], n_resamples, seed)
        axes.fill_between(
            _BAND_GRID, band[:, 0], band[:, 1], color="C0", alpha=0.2, linewidth=0,
            label="95 % CI (bootstrap over patients)",
        )  # fmt: skip
    if threshold is not None:
        positive = probability >= threshold
        fpr = positive[actual == 0].mean() if (actual == 0).any() else math.nan
        tpr = positive[actual == 1].mean() if (actual == 1).any() else math.nan
        axes.plot([fpr], [tpr], "o", color="C3", label=_operating_point_label(threshold))
    axes.set(
        title="ROC curve",
        xlabel="false-positive rate (1 - specificity)",
        ylabel="true-positive rate (sensitivity)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        aspect="equal",
    )
    axes.legend(loc="lower right")
    return figure


def _roc_band(
    actual: np.ndarray, probability: np.ndarray, groups: np.ndarray, n_resamples: int, seed: int
) -> np.ndarray:
    """``(len(_BAND_GRID), 2)``: the 2.5th and 97.5th percentile true-positive rate at each
    false-positive rate of the grid, over resamples of patients."""

    def true_positive_rates(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        if y.min() == y.max():
            return {str(k): math.nan for k in range(_BAND_GRID.size)}
        fpr, tpr, _ = roc_curve(y, p)
        rates = np.interp(_BAND_GRID, fpr, tpr)
        return {str(k): rate for k, rate in enumerate(rates)}

    intervals = bootstrap_intervals(
        true_positive_rates, groups, actual, probability, n_resamples=n_resamples, seed=seed
    )
    return np.array([intervals[str(k)] for k in range(_BAND_GRID.size)])


@_styled
def precision_recall_figure(
    labels: Any, probabilities: Any, threshold: float | None = None
) -> Figure:
    """Precision-recall curve (``sklearn.metrics.PrecisionRecallDisplay``) with the prevalence
    and the operating point (recall and precision of ``probability >= threshold``)."""
    actual, probability = known_labels(labels, probabilities)
    figure = _new_figure()
    axes = figure.add_subplot()
    PrecisionRecallDisplay.from_predictions(
        actual, probability, ax=axes, name="precision-recall", plot_chance_level=True
    )
    if threshold is not None:
        positive = probability >= threshold
        recall = positive[actual == 1].mean() if (actual == 1).any() else math.nan
        precision = actual[positive].mean() if positive.any() else math.nan
        axes.plot([recall], [precision], "o", color="C3", label=_operating_point_label(threshold))
    axes.set(
        title="Precision-recall curve",
        xlabel="recall (sensitivity)",
        ylabel="precision (positive predictive value)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    axes.legend(loc="lower left")
    return figure


@_styled
def confusion_matrix_figure(labels: Any, probabilities: Any, threshold: float) -> Figure:
    """Confusion matrix (``sklearn.metrics.ConfusionMatrixDisplay``) of
    ``probability >= threshold``, counts with the row's share."""
    actual, probability = known_labels(labels, probabilities)
    predicted = (probability >= threshold).astype(int)
    matrix = confusion_matrix(actual, predicted, labels=[1, 0])
    figure = _new_figure(3.6, 3.2)
    axes = figure.add_subplot()
    display = ConfusionMatrixDisplay(matrix, display_labels=list(_CLASS_NAMES[::-1]))
    display.plot(ax=axes, cmap="Blues", colorbar=False, values_format="d")
    for (row, column), text in np.ndenumerate(display.text_):
        total = matrix[row].sum()
        share = f"{matrix[row, column] / total:.0%}" if total else "-"
        text.set_text(f"{matrix[row, column]}\n({share})")
    axes.set(
        title=f"Confusion matrix (p \N{GREATER-THAN OR EQUAL TO} {threshold:.3g})",
        xlabel="predicted",
        ylabel="true",
    )
    return figure


@_styled
def calibration_figure(labels: Any, probabilities: Any, n_bins: int = 10) -> Figure:
    """Reliability curve (``sklearn.calibration.CalibrationDisplay``, uniform bins) above a
    histogram of how many scans fall in each bin, with the Brier score in the legend."""
    actual, probability = known_labels(labels, probabilities)
    figure = _new_figure(4.0, 4.6)
    curve_axes, count_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)}
    )
    brier = float(np.mean(np.square(probability - actual)))
    CalibrationDisplay.from_predictions(
        actual, probability, n_bins=n_bins, strategy="uniform", ax=curve_axes,
        name=f"model (Brier {brier:.3f})",
    )  # fmt: skip
    curve_axes.set(title="Calibration", xlabel="", ylabel="observed preterm frequency")
    curve_axes.legend(loc="upper left")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count_axes.hist(probability, bins=edges, color="C0", edgecolor="white")
    count_axes.set(xlabel="mean predicted p(preterm)", ylabel="scans", xlim=(0, 1))
    return figure


# Training curves

_LOSSES = (("loss", "total loss"), ("mask_loss", "mask loss"), ("label_loss", "label loss"))
_SCORES = (("mask_iou", "mask IoU"), ("iou", "IoU"), ("label_auc", "label AUC"))


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Reads a Keras ``history.csv`` (``CSVLogger``) into ``{column: [value per epoch]}``.

    Empty cells become NaN.

    Raises:
        ValueError: naming the file, line and column of a cell that is not a number, or for
            a file without a header.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise ValueError(f"{path}: no header row. Received: an empty file")
        history: dict[str, list[float]] = {name: [] for name in reader.fieldnames}
        for line, row in enumerate(reader, start=2):
            for name in reader.fieldnames:
                text = (row.get(name) or "").strip()
                try:
                    history[name].append(float(text) if text else math.nan)
                except ValueError:
                    raise ValueError(
                        f"{path}, line {line}, column {name!r}: not a number. Received: {text!r}"
                    ) from None
    return history


@_styled
def training_curves_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    """Losses (left) and scores in [0, 1] (right) per epoch, validation dashed.

    Left: ``loss``, ``mask_loss``, ``label_loss``; right: ``mask_iou`` (or ``iou`` of a
    mask-only model) and ``label_auc``; each where present, its ``val_`` column dashed in the
    same colour. The x axis is the epoch counted from 1 (``CSVLogger`` counts from 0), or the
    row number without an ``epoch`` column.

    Raises:
        ValueError: On columns of different lengths, no rows, or none of the columns above.
    """
    lengths = {key: len(values) for key, values in history.items()}
    if len(set(lengths.values())) != 1 or not next(iter(lengths.values())):
        raise ValueError(
            f"`history` columns must all hold the same number (>= 1) of rows. Received: {lengths}"
        )
    rows = next(iter(lengths.values()))
    epochs = (
        np.asarray(history["epoch"], float) + 1 if "epoch" in history else np.arange(1, rows + 1)
    )
    scores = [(k, n) for k, n in _SCORES if not (k == "iou" and "mask_iou" in history)]
    if not any(p + k in history for k, _ in (*_LOSSES, *scores) for p in ("", "val_")):
        raise ValueError(
            "`history` has none of the columns loss, mask_loss, label_loss, mask_iou, iou, "
            f"label_auc (or their val_ forms). Received: columns {sorted(history)}"
        )
    figure = _new_figure(7.0, 3.0)
    loss_axes, score_axes = figure.subplots(1, 2)
    for axes, series, title in ((loss_axes, _LOSSES, "Loss"), (score_axes, scores, "Scores")):
        for colour, (key, name) in enumerate(series):
            for prefix, style, split in (("", "-", "train"), ("val_", "--", "val")):
                if prefix + key in history:
                    axes.plot(
                        epochs, history[prefix + key], style, color=f"C{colour}",
                        label=f"{name} ({split})",
                    )  # fmt: skip
        axes.set(title=title, xlabel="epoch")
        if axes.lines:
            axes.legend()
        else:
            axes.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axes.transAxes)
    score_axes.set_ylim(0, 1)
    return figure


# Overlays


@_styled
def overlay_figure(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]],
    threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """One panel per ``(caption, image, true mask or None, mask probabilities)``: the image
    in gray at its own pixels, the reference outline in green and the predicted mask's
    (``probability > threshold``, the rule every mask score uses) in red, drawn as vector
    contours.

    Images are ``(H, W)`` or ``(H, W, 1)`` in [0, 1]; masks ``(H, W)``. Up to three panels a
    row. With several ``class_names`` the true masks hold class ids and the probabilities
    are a softmax ``(H, W, K + 1)`` (each pixel's most probable class): every class has its
    colour, the reference dashed and the prediction solid, named in a legend.
    """
    if class_names is not None and len(class_names) > 1:
        return _class_overlay_figure(rows, list(class_names))
    if not rows:
        raise ValueError("`rows` must hold at least one (caption, image, mask, probability).")
    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    figure = _new_figure(2.4 * columns, 2.4 * lines)
    panels = np.atleast_1d(figure.subplots(lines, columns, squeeze=False)).ravel()
    for axes, (caption, image, truth, probability) in zip(panels, rows, strict=False):
        image = np.asarray(image, float)
        image = image[..., 0] if image.ndim == 3 else image
        axes.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if truth is not None and np.asarray(truth).any():
            axes.contour(np.asarray(truth, float), levels=[0.5], colors="lime", linewidths=1)
        predicted = np.asarray(probability, float) > threshold
        if predicted.any():
            axes.contour(predicted.astype(float), levels=[0.5], colors="red", linewidths=1)
        axes.set_title(caption)
        axes.set_axis_off()
    for axes in panels[len(rows) :]:
        axes.set_axis_off()
    return figure


def _class_overlay_figure(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]], names: list[str]
) -> Figure:
    """:func:`overlay_figure` for class-id masks: one colour per class, with a legend."""
    from matplotlib.lines import Line2D

    if not rows:
        raise ValueError("`rows` must hold at least one (caption, image, mask, probability).")
    colours = [class_colour(k) for k in range(len(names))]
    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    figure = _new_figure(2.4 * columns, 2.4 * lines + 0.5)
    panels = np.atleast_1d(figure.subplots(lines, columns, squeeze=False)).ravel()
    for axes, (caption, image, truth, probability) in zip(panels, rows, strict=False):
        image = np.asarray(image, float)
        image = image[..., 0] if image.ndim == 3 else image
        axes.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        predicted = np.argmax(np.asarray(probability, float), axis=-1)
        for k, colour in enumerate(colours, start=1):
            if truth is not None and (np.asarray(truth) == k).any():
                axes.contour((np.asarray(truth) == k).astype(float), levels=[0.5],
                             colors=[colour], linewidths=1, linestyles="dashed")  # fmt: skip
            if (predicted == k).any():
                axes.contour((predicted == k).astype(float), levels=[0.5], colors=[colour],
                             linewidths=1)  # fmt: skip
        axes.set_title(caption)
        axes.set_axis_off()
    for axes in panels[len(rows) :]:
        axes.set_axis_off()
    handles = [Line2D([], [], color=c, label=n) for c, n in zip(colours, names, strict=True)]
    handles += [
        Line2D([], [], color="gray", linestyle="dashed", label="reference"),
        Line2D([], [], color="gray", label="prediction"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False)
    return figure


def class_colour(index: int) -> tuple[float, float, float, float]:
    """The colour of class ``index`` (0-based) in figures: matplotlib's ``tab10`` cycle."""
    from matplotlib import colormaps

    return colormaps["tab10"](index % 10)


# A measurement against its reference, predictors against each other


@_styled
def bland_altman_figure(
    measured: Any, reference: Any, *, quantity: str = "head circumference", unit: str = "mm"
) -> Figure:
    """Bland-Altman plot: the difference ``measured - reference`` against the mean of the two,
    one point per pair where both are finite, with horizontal lines at the bias (mean
    difference) and the 95 % limits of agreement (bias -/+ 1.96 SD), each labelled with its
    value; figures as ``cervixnet.clinical.agreement``.

    Args:
        measured: Measured values, shape ``(N,)``, in ``unit``; NaN where missing.
        reference: Reference values, same shape and unit.
        quantity: What was measured, for the axis labels. Defaults to "head circumference".
        unit: The unit of both, for the axis and line labels. Defaults to "mm".

    Raises:
        ValueError: If the sizes differ or no pair has both values finite.
    """
    figures = agreement(measured, reference)
    if figures["n"] == 0:
        raise ValueError(
            "No pair where `measured` and `reference` are both finite. "
            f"Received: {np.size(measured)} pairs"
        )
    measured = np.asarray(measured, float).ravel()
    reference = np.asarray(reference, float).ravel()
    both = np.isfinite(measured) & np.isfinite(reference)
    mean = (measured[both] + reference[both]) / 2.0
    difference = measured[both] - reference[both]
    figure = _new_figure(4.6, 3.6)
    axes = figure.add_subplot()
    axes.plot(mean, difference, "o", color="C0", alpha=0.6, markersize=3, label="scans")
    lines = (
        ("bias", "bias", "-", "C3"),
        ("loa_high", "+1.96 SD", "--", "0.3"),
        ("loa_low", "\N{MINUS SIGN}1.96 SD", "--", "0.3"),
    )
    for key, name, style, colour in lines:
        value = figures[key]
        if not math.isfinite(value):  # one pair: no standard deviation
            continue
        axes.axhline(value, linestyle=style, color=colour, linewidth=1, label=name)
        axes.text(
            0.99, value, f"{name} {value:.2f}".replace("-", "\N{MINUS SIGN}") + f" {unit}",
            transform=axes.get_yaxis_transform(), ha="right", va="bottom", color=colour,
        )  # fmt: skip
    axes.set(
        title=f"Bland-Altman: {quantity} (n = {figures['n']})",
        xlabel=f"mean of measured and reference ({unit})",
        ylabel=f"measured \N{MINUS SIGN} reference ({unit})",
    )
    return figure


@_styled
def decision_curve_figure(curves: Mapping[str, Any]) -> Figure:
    """Decision curves: net benefit against threshold probability, one line per predictor,
    with "treat all" (gray) and "treat none" (black, at 0).

    The y axis runs from a little below 0 (-0.05, or -10 % of the top when that is lower) to
    10 % above the prevalence, the most any strategy can reach (at threshold 0).

    Args:
        curves: ``cervixnet.clinical.decision_curve``'s output: ``thresholds``,
            ``net_benefit`` (``{name: values}``), ``treat_all``, ``treat_none`` and
            ``prevalence``.
    """
    thresholds = np.asarray(curves["thresholds"], float)
    figure = _new_figure(4.6, 3.6)
    axes = figure.add_subplot()
    for colour, (name, values) in enumerate(curves["net_benefit"].items()):
        axes.plot(thresholds, values, "-", color=f"C{colour}", label=name)
    axes.plot(thresholds, curves["treat_all"], "-", color="0.6", label="treat all")
    axes.plot(thresholds, curves["treat_none"], "-", color="black", linewidth=1,
              label="treat none")  # fmt: skip
    top = max(1.1 * float(curves["prevalence"]), 0.05)
    axes.set(
        title="Decision curve",
        xlabel="threshold probability",
        ylabel="net benefit",
        xlim=(float(thresholds.min()), float(thresholds.max())),
        ylim=(-max(0.05, 0.1 * top), top),
    )
    axes.legend(loc="upper right")
    return figure
