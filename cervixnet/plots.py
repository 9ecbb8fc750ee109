"""Report figures as images: ROC, precision-recall, reliability, confusion matrix, training curves.

Drawn with OpenCV and NumPy only (no matplotlib, no TensorFlow, no Keras), so the evaluation
report needs no plotting dependency. Every function returns a ``uint8`` BGR image of shape
``(height, width, 3)`` on a white background, ready for ``cv2.imwrite(path, image)``.

Conventions follow :mod:`cervixnet.analysis`: labels are 0/1 (1 = preterm) and a NaN label
(unknown outcome) is left out; a probability **at or above** the threshold predicts preterm.

Sizes are ``(width, height)`` in pixels. Text, line widths and margins scale with the size
(about 640x480 at scale 1). Colours are the Okabe-Ito palette, distinguishable with the common
forms of colour blindness. Text is ASCII (OpenCV's Hershey fonts have no other glyphs).

Typical use::

    cv2.imwrite("roc.png", roc_curve_plot(labels, probabilities, threshold=0.42))
    cv2.imwrite("history.png", training_curves_plot(read_history("runs/a/history.csv")))

For tests, :func:`plot_axes` returns the data-to-pixel mapping that :func:`line_chart` (and the
ROC, precision-recall and reliability plots built on it) uses for the same size and limits.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from cervixnet.analysis import known_labels

__all__ = [
    "GREEN",
    "MAGENTA",
    "PALETTE",
    "Axes",
    "confusion_matrix_plot",
    "hstack_images",
    "line_chart",
    "nice_ticks",
    "overlay_grid",
    "plot_axes",
    "precision_recall_plot",
    "read_history",
    "reliability_plot",
    "roc_curve_plot",
    "training_curves_plot",
    "vstack_images",
]

Color = tuple[int, int, int]  # BGR


def _bgr(hex_rgb: str) -> Color:
    value = int(hex_rgb.lstrip("#"), 16)
    return (value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF)


#: Okabe-Ito colours (BGR), in the order series get them: blue, vermillion, bluish green,
#: reddish purple, orange, sky blue, black. (Okabe-Ito yellow is left out: too light on white.)
PALETTE: tuple[Color, ...] = tuple(
    _bgr(c) for c in ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
)
#: Outline colours of :func:`overlay_grid`: ground truth and prediction (BGR).
GREEN: Color = (0, 255, 0)
MAGENTA: Color = (255, 0, 255)

_WHITE: Color = (255, 255, 255)
_TEXT: Color = (30, 30, 30)
_AXIS: Color = (70, 70, 70)
_GRID: Color = (228, 228, 228)
_REFERENCE: Color = (140, 140, 140)
_LEGEND_BORDER: Color = (200, 200, 200)
# Stops of matplotlib's "Blues" (at 0, 0.5 and 1), for the confusion matrix cells.
_CELL_SHADES = np.array([_bgr("#F7FBFF"), _bgr("#6BAED6"), _bgr("#08306B")], np.float64)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TITLE_FONT = cv2.FONT_HERSHEY_DUPLEX
_AA = cv2.LINE_AA
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT
_CLASSES = ("preterm", "control")
_STYLE_KEYS = frozenset({"color", "dashed", "thickness"})

Series = tuple[Any, ...]  # (label, x, y) or (label, x, y, style)


# Validation


def _size(size: Any, minimum: tuple[int, int] = (200, 150)) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
        valid = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError):
        valid = False
    if not valid or width < minimum[0] or height < minimum[1]:
        raise ValueError(
            f"`size` must be (width, height) in whole pixels, at least {minimum}. "
            f"Received: size={size!r}"
        )
    return width, height


def _limits(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"`{name}` must be (low, high), finite, with low < high. Received: {name}={value!r}"
        )
    return low, high


def _unit_interval(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")
    return number


def _vector(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must hold numbers. Received: {name}={value!r}") from None
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be one-dimensional. Received: {name} with shape {array.shape}"
        )
    return array


def _labelled(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    """``cervixnet.analysis.known_labels``, and both classes present (a curve needs both)."""
    actual, probability = known_labels(labels, probabilities)
    n_positive = int(np.count_nonzero(actual))
    if n_positive == 0 or n_positive == actual.size:
        raise ValueError(
            "A curve needs both classes among the known labels. "
            f"Received: {n_positive} preterm and {actual.size - n_positive} control"
        )
    return actual, probability


def _format_threshold(threshold: float) -> str:
    text = f"{threshold:.2f}"
    return text if abs(float(text) - threshold) < 1e-9 else f"{threshold:.3g}"


# Ticks


def _nice(value: float, round_up: bool) -> float:
    """A 'nice' number (1, 2, 5 times a power of ten) near ``value`` > 0 (Heckbert, 1990)."""
    exponent = math.floor(math.log10(value))
    fraction = value / 10.0**exponent
    if round_up:
        nice = 1 if fraction < 1.5 else 2 if fraction < 3 else 5 if fraction < 7 else 10
    else:
        nice = 1 if fraction <= 1 else 2 if fraction <= 2 else 5 if fraction <= 5 else 10
    return nice * 10.0**exponent


def _tick_step(low: float, high: float, max_ticks: int, min_step: float) -> float:
    step = _nice(_nice(high - low, False) / max(max_ticks - 1, 1), True)
    return max(step, min_step)


def nice_ticks(low: float, high: float, max_ticks: int = 6, *, min_step: float = 0.0) -> np.ndarray:
    """Round tick values (multiples of 1, 2 or 5 times a power of ten) within ``[low, high]``.

    Args:
        low, high: Finite axis limits, ``low < high``.
        max_ticks: About how many ticks at most. Defaults to 6.
        min_step: Smallest step, e.g. 1 for whole epochs. Defaults to 0.

    Returns:
        Float array ``(K,)``, ascending, e.g. ``[0, 0.2, ..., 1]`` for ``(0, 1)``.
    """
    low, high = _limits("(low, high)", (low, high))
    step = _tick_step(low, high, max_ticks, min_step)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    ticks = np.arange(first, last + 1) * step
    return np.where(np.abs(ticks) < step * 1e-9, 0.0, ticks)


def _tick_labels(ticks: np.ndarray) -> list[str]:
    step = float(np.min(np.diff(ticks))) if ticks.size > 1 else abs(float(ticks[0])) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{t:.{decimals}f}" for t in ticks]


def _nice_limits(low: float, high: float, min_step: float = 0.0) -> tuple[float, float]:
    """Data range widened to the enclosing ticks; a single value gets a unit-wide range."""
    if high <= low:
        half = max(abs(low) * 0.1, 0.5, min_step)
        low, high = low - half, high + half
    step = _tick_step(low, high, 6, min_step)
    return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step


# Text


@dataclass(frozen=True)
class _Style:
    """Font sizes and pixel lengths for one scale (1 = a 640x480 chart)."""

    scale: float

    def px(self, length: float) -> int:
        return max(1, round(length * self.scale))

    @property
    def title(self) -> float:
        return 0.62 * self.scale

    @property
    def label(self) -> float:
        return 0.52 * self.scale

    @property
    def tick(self) -> float:
        return 0.44 * self.scale

    @property
    def small(self) -> float:
        return 0.4 * self.scale


def _style_for(width: int, height: int) -> _Style:
    return _Style(max(0.7, min(width / 520.0, height / 480.0)))


def _thickness(size: float) -> int:
    """Stroke width for a font size: 1 up to size 0.9, then growing with it."""
    return max(1, round(size * 1.6))


def _text_size(
    text: str, size: float, font: int = _FONT, thickness: int | None = None
) -> tuple[int, int, int]:
    """``(width, height above the baseline, depth below it)`` of ``text`` in pixels."""
    thickness = thickness or _thickness(size)
    (width, height), baseline = cv2.getTextSize(text, font, size, thickness)
    return width, height, baseline


def _put(
    image: np.ndarray,
    text: str,
    x: float,
    y: float,
    size: float,
    *,
    color: Color = _TEXT,
    font: int = _FONT,
    ha: str = "left",
    va: str = "baseline",
    halo: bool = False,
    thickness: int | None = None,
) -> tuple[int, int, int, int]:
    """Draws ``text`` of font ``size`` anchored at ``(x, y)``; returns its box ``(x0, y0, x1, y1)``.

    ``ha`` is left/center/right; ``va`` is baseline/top/center/bottom (bottom = below descenders).
    """
    thickness = thickness or _thickness(size)
    width, height, baseline = _text_size(text, size, font, thickness)
    x0 = x - {"left": 0.0, "center": width / 2.0, "right": float(width)}[ha]
    base = y + {"baseline": 0.0, "top": height, "center": height / 2.0, "bottom": -baseline}[va]
    origin = (round(x0), round(base))
    if halo:
        cv2.putText(image, text, origin, font, size, _WHITE, thickness + 3, _AA)
    cv2.putText(image, text, origin, font, size, color, thickness, _AA)
    return origin[0], origin[1] - height, origin[0] + width, origin[1] + baseline


def _put_vertical(image: np.ndarray, text: str, cx: float, cy: float, size: float) -> None:
    """Draws dark ``text`` rotated 90 degrees counter-clockwise, centred at ``(cx, cy)``."""
    width, height, baseline = _text_size(text, size)
    canvas = np.full((height + baseline + 4, width + 4, 3), 255, np.uint8)
    cv2.putText(canvas, text, (2, height + 2), _FONT, size, _TEXT, _thickness(size), _AA)
    rotated = cv2.rotate(canvas, cv2.ROTATE_90_COUNTERCLOCKWISE)
    rows, cols = rotated.shape[:2]
    top, left = round(cy - rows / 2), round(cx - cols / 2)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + rows, image.shape[0]), min(left + cols, image.shape[1])
    if y1 > y0 and x1 > x0:
        patch = rotated[y0 - top : y1 - top, x0 - left : x1 - left]
        np.minimum(image[y0:y1, x0:x1], patch, out=image[y0:y1, x0:x1])


# Axes and panels


@dataclass(frozen=True)
class Axes:
    """The data-to-pixel mapping of one chart.

    Attributes:
        frame: ``(left, top, right, bottom)``: pixel columns/rows of the frame lines.
        xlim, ylim: Data limits; they map to ``inset`` pixels inside the frame.
        inset: Pixels between the frame and the data limits.
    """

    frame: tuple[int, int, int, int]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    inset: int

    def to_pixel(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pixel column and row (floats, same shape as the inputs) of data points ``(x, y)``."""
        left, top, right, bottom = self.frame
        x0, x1 = left + self.inset, right - self.inset
        y0, y1 = bottom - self.inset, top + self.inset
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        column = x0 + (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0]) * (x1 - x0)
        row = y0 + (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0]) * (y1 - y0)
        return column, row


def _layout(
    region: tuple[int, int, int, int],
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    style: _Style,
    *,
    title: bool,
    xlabel: bool,
    ylabel: bool,
    x_min_step: float = 0.0,
) -> Axes:
    left, top, right, bottom = region
    pad, gap, tick_length = style.px(10), style.px(5), style.px(5)
    x_labels = _tick_labels(nice_ticks(*xlim, min_step=x_min_step))
    y_labels = _tick_labels(nice_ticks(*ylim))
    y_tick_width = max(_text_size(t, style.tick)[0] for t in y_labels)
    _, tick_height, tick_baseline = _text_size("0", style.tick)
    _, label_height, label_baseline = _text_size("Ag", style.label)
    _, title_height, title_baseline = _text_size("Ag", style.title, font=_TITLE_FONT)
    frame_top = top + pad + (title_height + title_baseline + pad if title else 0)
    frame_left = left + pad + y_tick_width + gap + tick_length
    frame_left += label_height + label_baseline + gap if ylabel else 0
    frame_bottom = bottom - pad - tick_length - gap - tick_height - tick_baseline
    frame_bottom -= label_height + label_baseline + gap if xlabel else 0
    last_half = _text_size(x_labels[-1], style.tick)[0] // 2
    frame_right = right - max(pad + 2, last_half + 4)
    if frame_right - frame_left < 40 or frame_bottom - frame_top < 40:
        raise ValueError(
            "The chart is too small for its labels. "
            f"Received: a region of {right - left}x{bottom - top} pixels"
        )
    return Axes((frame_left, frame_top, frame_right, frame_bottom), xlim, ylim, style.px(8))


def plot_axes(
    size: tuple[int, int] = (640, 480),
    *,
    xlim: tuple[float, float] = (0.0, 1.0),
    ylim: tuple[float, float] = (0.0, 1.0),
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
) -> Axes:
    """The :class:`Axes` that :func:`line_chart` lays out for a size, limits and texts.

    Only whether ``title``, ``xlabel`` and ``ylabel`` are empty matters, not their content;
    e.g. ``plot_axes(size, title="ROC", xlabel="x", ylabel="y")`` maps the points of
    ``roc_curve_plot(..., size=size)`` (limits (0, 1)).
    """
    width, height = _size(size)
    return _layout(
        (0, 0, width, height),
        _limits("xlim", xlim),
        _limits("ylim", ylim),
        _style_for(width, height),
        title=bool(title),
        xlabel=bool(xlabel),
        ylabel=bool(ylabel),
    )


def _finite_runs(mask: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the runs of consecutive True entries of ``mask``."""
    indices = np.flatnonzero(mask)
    if indices.size == 0:
        return []
    return np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1)


def _dashes(points: np.ndarray, dash: float, gap: float) -> list[np.ndarray]:
    """Splits a polyline ``(N, 2)`` into dash pieces of length ``dash`` separated by ``gap``."""
    distance = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    pieces = []
    for start in np.arange(0.0, distance[-1], dash + gap):
        end = min(start + dash, distance[-1])
        inside = (distance > start) & (distance < end)
        at = np.concatenate([[start], distance[inside], [end]])
        pieces.append(
            np.stack(
                [np.interp(at, distance, points[:, 0]), np.interp(at, distance, points[:, 1])], 1
            )
        )
    return pieces


def _fixed(points: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """Float pixel points ``(N, 2)`` relative to ``origin`` as OpenCV fixed-point int32."""
    relative = np.clip(points - np.asarray(origin, np.float64), -60000.0, 60000.0)
    return np.round(relative * _ONE).astype(np.int32)


class _Panel:
    """One chart (frame, grid, ticks, labels, title) in a region of an image; draws data on it.

    Data are clipped to the inside of the frame. ``ink`` records where data, markers and
    their labels were drawn, so that labels and the legend go where they hide the least.
    """

    def __init__(
        self,
        image: np.ndarray,
        region: tuple[int, int, int, int],
        *,
        title: str,
        xlabel: str,
        ylabel: str,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        x_min_step: float = 0.0,
    ) -> None:
        self.image = image
        self.style = style = _style_for(region[2] - region[0], region[3] - region[1])
        self.axes = axes = _layout(
            region,
            xlim,
            ylim,
            style,
            title=bool(title),
            xlabel=bool(xlabel),
            ylabel=bool(ylabel),
            x_min_step=x_min_step,
        )
        self.ink = np.zeros(image.shape[:2], np.uint8)
        left, top, right, bottom = axes.frame
        self.inner = (left + 1, top + 1, right, bottom)  # x0, y0, x1, y1 (exclusive)
        tick_length, gap = style.px(5), style.px(5)
        x_ticks = nice_ticks(*xlim, min_step=x_min_step)
        y_ticks = nice_ticks(*ylim)
        columns, _ = axes.to_pixel(x_ticks, np.zeros_like(x_ticks))
        _, rows = axes.to_pixel(np.zeros_like(y_ticks), y_ticks)
        for column, text in zip(np.round(columns).astype(int), _tick_labels(x_ticks), strict=True):
            cv2.line(image, (column, top + 1), (column, bottom - 1), _GRID, 1)
            cv2.line(image, (column, bottom), (column, bottom + tick_length), _AXIS, 1)
            _put(image, text, column, bottom + tick_length + gap, style.tick, ha="center", va="top")
        for row, text in zip(np.round(rows).astype(int), _tick_labels(y_ticks), strict=True):
            cv2.line(image, (left + 1, row), (right - 1, row), _GRID, 1)
            cv2.line(image, (left - tick_length, row), (left, row), _AXIS, 1)
            _put(image, text, left - tick_length - gap, row, style.tick, ha="right", va="center")
        cv2.rectangle(image, (left, top), (right, bottom), _AXIS, 1)
        center = (left + right) / 2
        if title:
            _put(
                image,
                title,
                center,
                region[1] + style.px(10),
                style.title,
                font=_TITLE_FONT,
                ha="center",
                va="top",
            )
        if xlabel:
            _put(
                image,
                xlabel,
                center,
                region[3] - style.px(10),
                style.label,
                ha="center",
                va="bottom",
            )
        if ylabel:
            _, height, baseline = _text_size("Ag", style.label)
            _put_vertical(
                image,
                ylabel,
                region[0] + style.px(10) + (height + baseline) / 2,
                (top + bottom) / 2,
                style.label,
            )

    def _views(self) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        x0, y0, x1, y1 = self.inner
        return self.image[y0:y1, x0:x1], self.ink[y0:y1, x0:x1], (x0, y0)

    def line(
        self,
        x: np.ndarray,
        y: np.ndarray,
        color: Color,
        *,
        dashed: bool = False,
        thickness: int | None = None,
    ) -> None:
        """Polyline through the finite points; a NaN or infinite value breaks the line.

        ``thickness`` is in pixels at scale 1; defaults to 2 (and at least 2 pixels).
        """
        thickness = self.style.px(thickness) if thickness else max(2, self.style.px(2))
        image, ink, origin = self._views()
        columns, rows = self.axes.to_pixel(x, y)
        points = np.stack([columns, rows], 1)
        for run in _finite_runs(np.isfinite(columns) & np.isfinite(rows)):
            if run.size == 1:
                center = tuple(int(v) for v in _fixed(points[run], origin)[0])
                radius = max(thickness, 2) * _ONE
                cv2.circle(image, center, radius, color, -1, _AA, _SHIFT)
                cv2.circle(ink, center, radius, 255, -1, cv2.LINE_8, _SHIFT)
                continue
            pieces = [points[run]]
            if dashed:
                pieces = _dashes(points[run], self.style.px(9), self.style.px(6))
            fixed = [_fixed(piece, origin) for piece in pieces]
            cv2.polylines(image, fixed, False, color, thickness, _AA, _SHIFT)
            cv2.polylines(ink, fixed, False, 255, thickness + 2, cv2.LINE_8, _SHIFT)

    def dots(self, x: np.ndarray, y: np.ndarray, radii: np.ndarray, color: Color) -> None:
        """Filled circles with a thin dark outline (not clipped to the frame)."""
        columns, rows = self.axes.to_pixel(x, y)
        for column, row, radius in zip(columns, rows, radii, strict=True):
            if not (math.isfinite(column) and math.isfinite(row)):
                continue
            center = (round(column * _ONE), round(row * _ONE))
            cv2.circle(self.image, center, round(radius * _ONE), color, -1, _AA, _SHIFT)
            cv2.circle(self.image, center, round(radius * _ONE), _TEXT, 1, _AA, _SHIFT)
            cv2.circle(self.ink, center, round((radius + 2) * _ONE), 255, -1, cv2.LINE_8, _SHIFT)

    def _free_box(self, boxes: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
        """The first of the candidate boxes that lies in the frame and covers the least ink."""
        x0, y0, x1, y1 = self.inner
        best, best_score = boxes[0], math.inf
        for box in boxes:
            if box[0] < x0 or box[1] < y0 or box[2] > x1 or box[3] > y1:
                continue
            score = int(np.count_nonzero(self.ink[box[1] : box[3], box[0] : box[2]]))
            if score < best_score:
                best, best_score = box, score
        return best

    def annotate(self, x: float, y: float, text: str, radius: float, *, size: float) -> None:
        """Puts ``text`` beside the point ``(x, y)`` where it hides the least data."""
        if not text:
            return
        (column,), (row,) = (np.atleast_1d(v) for v in self.axes.to_pixel(x, y))
        if not (math.isfinite(column) and math.isfinite(row)):
            return
        width, height, baseline = _text_size(text, size)
        offset = radius + self.style.px(4)
        boxes = []
        for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, -1), (0, 1)):
            left = column + offset if dx > 0 else column - offset - width if dx < 0 else None
            left = column - width / 2 if left is None else left
            top = row + offset * 0.6 if dy > 0 else row - offset * 0.6 - height - baseline
            if dx == 0:
                top = row + offset if dy > 0 else row - offset - height - baseline
            boxes.append(
                (round(left), round(top), round(left + width), round(top + height + baseline))
            )
        box = self._free_box(boxes)
        _put(self.image, text, box[0], box[1], size, va="top", halo=True)
        self.ink[box[1] : box[3], box[0] : box[2]] = 255

    def legend(self, entries: Sequence[tuple[str, Color, bool, int | None]]) -> None:
        """A framed legend in the free-est inner corner: ``(label, colour, dashed, thickness)``."""
        if not entries:
            return
        style = self.style
        size = style.tick
        sizes = [_text_size(entry[0], size) for entry in entries]
        row_height = max(h + b for _, h, b in sizes) + style.px(6)
        pad, sample = style.px(8), style.px(30)
        width = pad + sample + pad + max(w for w, _, _ in sizes) + pad
        height = pad + row_height * len(entries)
        x0, y0, x1, y1 = self.inner
        margin = style.px(6)
        right, bottom = x1 - margin - width, y1 - margin - height
        center_x, center_y = (x0 + x1 - width) // 2, (y0 + y1 - height) // 2
        corners = [  # corners first, then the middles of the sides
            (right, y0 + margin),
            (right, bottom),
            (x0 + margin, y0 + margin),
            (x0 + margin, bottom),
            (center_x, y0 + margin),
            (center_x, bottom),
            (right, center_y),
            (x0 + margin, center_y),
        ]
        left, top, right, bottom = self._free_box(
            [(x, y, x + width, y + height) for x, y in corners]
        )
        cv2.rectangle(self.image, (left, top), (right, bottom), _WHITE, -1)
        cv2.rectangle(self.image, (left, top), (right, bottom), _LEGEND_BORDER, 1)
        for index, (label, color, dashed, thickness) in enumerate(entries):
            middle = top + pad // 2 + row_height * index + row_height / 2
            points = np.array([[left + pad, middle], [left + pad + sample, middle]])
            pieces = _dashes(points, style.px(9), style.px(6)) if dashed else [points]
            fixed = [_fixed(piece, (0, 0)) for piece in pieces]
            width = style.px(thickness) if thickness else max(2, style.px(2))
            cv2.polylines(self.image, fixed, False, color, width, _AA, _SHIFT)
            _put(self.image, label, left + 2 * pad + sample, middle, size, va="center")

    def message(self, text: str) -> None:
        """Grey text in the middle of the frame (e.g. 'no data')."""
        x0, y0, x1, y1 = self.inner
        _put(
            self.image,
            text,
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            self.style.label,
            color=_REFERENCE,
            ha="center",
            va="center",
        )


def _canvas(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 255, np.uint8)


# Line charts


def _parse_style(where: str, style: Any) -> dict[str, Any]:
    if not isinstance(style, Mapping) or not set(style) <= _STYLE_KEYS:
        raise ValueError(
            f"{where}: the style must be a mapping with keys among {sorted(_STYLE_KEYS)}. "
            f"Received: {style!r}"
        )
    parsed = dict(style)
    if "color" in parsed:
        color = parsed["color"]
        try:
            parsed["color"] = tuple(int(c) for c in color)
            valid = len(parsed["color"]) == 3 and all(0 <= c <= 255 for c in parsed["color"])
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"{where}: `color` must be BGR in 0..255. Received: color={color!r}")
    thickness = parsed.get("thickness")
    if thickness is not None and (
        isinstance(thickness, bool) or not isinstance(thickness, int | np.integer) or thickness < 1
    ):
        raise ValueError(
            f"{where}: `thickness` must be an integer >= 1. Received: thickness={thickness!r}"
        )
    return parsed


def _parse_points(kind: str, items: Any) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    parsed = []
    for index, item in enumerate(items):
        where = f"`{kind}[{index}]`"
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) not in (3, 4):
            raise ValueError(
                f"{where} must be (label, x, y) or (label, x, y, style). Received: {item!r}"
            )
        label, x, y = item[0], _vector(f"{kind}[{index}] x", item[1]), item[2]
        y = _vector(f"{kind}[{index}] y", y)
        if not isinstance(label, str):
            raise ValueError(f"{where}: the label must be a string. Received: label={label!r}")
        if x.shape != y.shape:
            raise ValueError(
                f"{where} ({label!r}): x and y must have the same length. "
                f"Received: len(x)={x.size}, len(y)={y.size}"
            )
        if x.size == 0:
            raise ValueError(f"{where} ({label!r}) must hold at least one point. Received: 0")
        style = _parse_style(where, item[3]) if len(item) == 4 else {}
        parsed.append((label, x, y, style))
    return parsed


def _auto_limits(name: str, values: list[np.ndarray], min_step: float = 0.0) -> tuple[float, float]:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.empty(0)
    if finite.size == 0:
        raise ValueError(
            f"`{name}` cannot be chosen from the data: no finite value. Received: {name}=None"
        )
    return _nice_limits(float(finite.min()), float(finite.max()), min_step)


def _draw_line_chart(
    image: np.ndarray,
    region: tuple[int, int, int, int],
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None,
    ylim: tuple[float, float] | None,
    markers: Sequence[Series] | None = None,
    diagonal: bool = False,
    x_min_step: float = 0.0,
    empty_message: str = "",
) -> _Panel:
    lines = _parse_points("series", series)
    points = _parse_points("markers", markers or ())
    if not lines and not points and not empty_message:
        raise ValueError("`series` must hold at least one (label, x, y). Received: series=[]")
    xs = [x for _, x, _, _ in lines + points]
    ys = [y for _, _, y, _ in lines + points]
    xlim = _limits("xlim", xlim) if xlim is not None else None
    ylim = _limits("ylim", ylim) if ylim is not None else None
    if empty_message and not any(np.isfinite(v).any() for v in ys):
        xlim, ylim = xlim or (0.0, 1.0), ylim or (0.0, 1.0)
    xlim = xlim or _auto_limits("xlim", xs, x_min_step)
    ylim = ylim or _auto_limits("ylim", ys)
    panel = _Panel(
        image,
        region,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        xlim=xlim,
        ylim=ylim,
        x_min_step=x_min_step,
    )
    if diagonal:
        low, high = max(xlim[0], ylim[0]), min(xlim[1], ylim[1])
        if low < high:
            ends = np.array([low, high])
            panel.line(ends, ends, _REFERENCE, dashed=True, thickness=1)
    automatic = iter(PALETTE * (len(lines) + len(points) + 1))
    entries = []
    for label, x, y, style in lines:
        color = style.get("color") or next(automatic)
        dashed = bool(style.get("dashed", False))
        panel.line(x, y, color, dashed=dashed, thickness=style.get("thickness"))
        if label:
            entries.append((label, color, dashed, style.get("thickness")))
    radius = panel.style.scale * 6
    for _, x, y, style in points:
        panel.dots(x, y, np.full(x.shape, radius), style.get("color") or next(automatic))
    for label, x, y, _ in points:
        for xi, yi in zip(x, y, strict=True):
            panel.annotate(xi, yi, label, radius, size=panel.style.tick)
    if empty_message and not any(
        np.isfinite(x).any() and np.isfinite(y).any() for _, x, y, _ in lines
    ):
        panel.message(empty_message)
    panel.legend(entries)
    return panel


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    markers: Sequence[Series] | None = None,
    diagonal: bool = False,
    size: tuple[int, int] = (640, 480),
) -> np.ndarray:
    """A line chart with title, axis labels, round ticks, light grid and legend.

    Args:
        series: ``(label, x, y)`` or ``(label, x, y, style)`` per line; ``x`` and ``y`` 1-D of
            equal length >= 1. A NaN breaks the line; a lone finite point is drawn as a dot.
            ``style`` may set ``color`` (BGR), ``dashed`` (bool) and ``thickness`` (pixels at
            scale 1, default 2); without a colour, lines take :data:`PALETTE` colours in
            order. A series labelled ``""`` is left out of the legend (drawn when any label is
            set).
        title, xlabel, ylabel: Texts; ``""`` leaves one out (and its space).
        xlim, ylim: ``(low, high)``; defaults to the data range widened to round ticks.
        markers: ``(label, x, y)`` (or with a style) points drawn as filled circles, each
            labelled with its label beside it; colours continue after the series'.
        diagonal: Draws the dashed grey ``y = x`` reference (ROC, reliability).
        size: ``(width, height)``, at least (200, 150). Defaults to (640, 480).

    Returns:
        ``uint8`` BGR image ``(height, width, 3)``. :func:`plot_axes` gives its data-to-pixel
        mapping (pass the limits when they were not given here).

    Raises:
        ValueError: On an empty ``series`` (and no markers), a series without points, x and y
            of different lengths, bad limits, a bad style or a too small size.
    """
    width, height = _size(size)
    image = _canvas(width, height)
    _draw_line_chart(
        image,
        (0, 0, width, height),
        series,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        xlim=xlim,
        ylim=ylim,
        markers=markers,
        diagonal=diagonal,
    )
    return image


def roc_curve_plot(
    labels: Any,
    probabilities: Any,
    threshold: float,
    *,
    title: str = "ROC",
    size: tuple[int, int] = (640, 480),
) -> np.ndarray:
    """ROC curve with its AUC in the legend and the operating point at ``threshold`` marked.

    Args:
        labels: 0/1 labels (1 = preterm), ``(N,)`` or ``(N, 1)``; NaN labels are left out.
        probabilities: Preterm probabilities in [0, 1], same number of entries.
        threshold: In [0, 1]; the operating point is (false positive rate, sensitivity) of
            ``p >= threshold``, labelled ``threshold 0.42``.
        title: Defaults to "ROC". size: Defaults to (640, 480).

    Returns:
        ``uint8`` BGR image ``(height, width, 3)``; axes limits (0, 1).

    Raises:
        ValueError: On mismatched lengths, bad labels or probabilities, a single class, or a
            threshold outside [0, 1].
    """
    threshold = _unit_interval("threshold", threshold)
    actual, probability = _labelled(labels, probabilities)
    fpr, tpr, _ = roc_curve(actual, probability)
    auc = roc_auc_score(actual, probability)
    predicted = probability >= threshold
    sensitivity = float(np.mean(predicted[actual]))
    false_positive_rate = float(np.mean(predicted[~actual]))
    return line_chart(
        [(f"model (AUC {auc:.2f})", fpr, tpr)],
        title=title,
        xlabel="false positive rate (1 - specificity)",
        ylabel="sensitivity",
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
        markers=[
            (f"threshold {_format_threshold(threshold)}", [false_positive_rate], [sensitivity])
        ],
        diagonal=True,
        size=size,
    )


def precision_recall_plot(
    labels: Any,
    probabilities: Any,
    threshold: float,
    *,
    title: str = "Precision-recall",
    size: tuple[int, int] = (640, 480),
) -> np.ndarray:
    """Precision-recall curve (steps), average precision, prevalence and operating point.

    The curve is drawn as steps, the interpolation that average precision sums over. The
    prevalence (share of preterm) is the dashed grey line a random model scores. The operating
    point (recall, precision) of ``p >= threshold`` is marked unless nothing is predicted
    preterm there (precision undefined).

    Args and raises: as :func:`roc_curve_plot`; title defaults to "Precision-recall".

    Returns:
        ``uint8`` BGR image ``(height, width, 3)``; axes limits (0, 1).
    """
    threshold = _unit_interval("threshold", threshold)
    actual, probability = _labelled(labels, probabilities)
    precision, recall, _ = precision_recall_curve(actual, probability)
    average_precision = average_precision_score(actual, probability)
    recall, precision = recall[::-1], precision[::-1]  # increasing recall
    step_x, step_y = np.repeat(recall, 2)[:-1], np.repeat(precision, 2)[1:]
    prevalence = float(np.mean(actual))
    predicted = probability >= threshold
    markers = []
    if predicted.any():
        point_recall = float(np.mean(predicted[actual]))
        point_precision = float(np.mean(actual[predicted]))
        markers.append(
            (f"threshold {_format_threshold(threshold)}", [point_recall], [point_precision])
        )
    return line_chart(
        [
            (f"model (AP {average_precision:.2f})", step_x, step_y),
            (
                f"prevalence {prevalence:.2f}",
                [0.0, 1.0],
                [prevalence, prevalence],
                {"color": _REFERENCE, "dashed": True, "thickness": 1},
            ),
        ],
        title=title,
        xlabel="recall (sensitivity)",
        ylabel="precision (positive predictive value)",
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
        markers=markers,
        size=size,
    )


def reliability_plot(
    mean_predicted: Any,
    observed_frequency: Any,
    count: Any,
    *,
    brier: float | None = None,
    title: str = "Reliability",
    size: tuple[int, int] = (640, 480),
) -> np.ndarray:
    """Reliability diagram: observed preterm frequency against mean predicted probability.

    Takes the bins of ``cervixnet.analysis.reliability_curve``. Each non-empty bin is a dot
    whose area grows with its count, annotated ``n=12``; dots are joined in order. The dashed
    diagonal is perfect calibration.

    Args:
        mean_predicted, observed_frequency: ``(B,)`` in [0, 1]; NaN for an empty bin.
        count: ``(B,)`` images per bin, >= 0.
        brier: Brier score shown in the legend, e.g. ``curve["brier_score"]``. Optional.
        title: Defaults to "Reliability". size: Defaults to (640, 480).

    Returns:
        ``uint8`` BGR image ``(height, width, 3)``; axes limits (0, 1).

    Raises:
        ValueError: On lengths that differ, a negative count, or no non-empty bin.
    """
    predicted = _vector("mean_predicted", mean_predicted)
    observed = _vector("observed_frequency", observed_frequency)
    counts = _vector("count", count)
    if not predicted.shape == observed.shape == counts.shape:
        raise ValueError(
            "`mean_predicted`, `observed_frequency` and `count` must have the same length. "
            f"Received: {predicted.size}, {observed.size} and {counts.size}"
        )
    if np.any(~(counts >= 0)):
        raise ValueError(f"`count` must be >= 0. Received: count={counts.tolist()!r}")
    filled = (counts > 0) & np.isfinite(predicted) & np.isfinite(observed)
    if not filled.any():
        raise ValueError(f"No bin has images. Received: count={counts.tolist()!r}")
    label = "model" if brier is None else f"model (Brier {float(brier):.3f})"
    width, height = _size(size)
    image = _canvas(width, height)
    panel = _draw_line_chart(
        image,
        (0, 0, width, height),
        [
            (
                "perfect calibration",
                [0.0, 1.0],
                [0.0, 1.0],
                {"color": _REFERENCE, "dashed": True, "thickness": 1},
            ),
            (label, predicted[filled], observed[filled], {"color": PALETTE[0]}),
        ],
        title=title,
        xlabel="mean predicted probability",
        ylabel="observed preterm frequency",
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
    )
    style = panel.style
    radii = style.scale * (3.0 + 6.0 * np.sqrt(counts[filled] / counts[filled].max()))
    panel.dots(predicted[filled], observed[filled], radii, PALETTE[0])
    for x, y, n, radius in zip(
        predicted[filled], observed[filled], counts[filled], radii, strict=True
    ):
        panel.annotate(x, y, f"n={n:g}", radius, size=style.small)
    return image


# Confusion matrix


def _confusion_label_width(style: _Style) -> int:
    """Width of the row titles left of the matrix: "true", then "preterm"/"control"."""
    _, label_h, label_b = _text_size("Ag", style.label)
    row_label_w = max(_text_size(t, style.label)[0] for t in _CLASSES)
    return label_h + label_b + style.px(8) + row_label_w + style.px(10)


def _confusion_cells(width: int, height: int) -> dict[str, tuple[int, int, int, int]]:
    """Cell boxes ``(x0, y0, x1, y1)`` of :func:`confusion_matrix_plot` for its size."""
    style = _style_for(width, height)
    _, title_h, title_b = _text_size("Ag", style.title, font=_TITLE_FONT)
    _, label_h, label_b = _text_size("Ag", style.label)
    pad = style.px(12)
    top = pad + title_h + title_b + pad + 2 * (label_h + label_b + style.px(8))
    bottom = height - pad - (label_h + label_b) - pad
    labels = _confusion_label_width(style)
    side = min(width - 2 * pad - labels, bottom - top)
    left = (width - labels - side) // 2 + labels
    half = side // 2
    return {
        "tp": (left, top, left + half, top + half),
        "fn": (left + half, top, left + side, top + half),
        "fp": (left, top + half, left + half, top + side),
        "tn": (left + half, top + half, left + side, top + side),
    }


def _count(name: str, value: Any) -> int:
    """``value`` as an int, or ValueError unless it is a whole number >= 0 (3.0 is fine)."""
    valid = not isinstance(value, bool) and isinstance(
        value, int | float | np.integer | np.floating
    )
    if not (valid and math.isfinite(value) and value >= 0 and value == int(value)):
        raise ValueError(f"`{name}` must be an integer >= 0. Received: {name}={value!r}")
    return int(value)


def _ratio_text(numerator: int, denominator: int) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "n/a"


def confusion_matrix_plot(
    tp: int,
    fp: int,
    tn: int,
    fn: int,
    *,
    title: str = "Confusion matrix",
    size: tuple[int, int] = (480, 420),
) -> np.ndarray:
    """The 2x2 confusion matrix as in the paper, with row percentages.

    Rows are the true class (preterm, control), columns the predicted class (preterm,
    control). Each cell shows its count, its share of the row (e.g. ``80.0%``) and a small
    TP/FN/FP/TN tag; its blue shade deepens with that share. Below: sensitivity,
    specificity and false positive rate (``n/a`` where a row is empty).

    Args:
        tp, fp, tn, fn: Counts, integers >= 0 (e.g. ``binary_figures(...)["confusion_matrix"]``).
        title: Defaults to "Confusion matrix". size: Defaults to (480, 420), at least (300, 260).

    Returns:
        ``uint8`` BGR image ``(height, width, 3)``.
    """
    counts = {name: _count(name, v) for name, v in (("tp", tp), ("fp", fp), ("tn", tn), ("fn", fn))}
    width, height = _size(size, minimum=(300, 260))
    image = _canvas(width, height)
    style = _style_for(width, height)
    cells = _confusion_cells(width, height)
    rows = {"tp": "preterm", "fn": "preterm", "fp": "control", "tn": "control"}
    totals = {"preterm": counts["tp"] + counts["fn"], "control": counts["fp"] + counts["tn"]}
    for name, (x0, y0, x1, y1) in cells.items():
        total = totals[rows[name]]
        fraction = counts[name] / total if total else 0.0
        shade = [np.interp(fraction, (0.0, 0.5, 1.0), _CELL_SHADES[:, c]) for c in range(3)]
        cv2.rectangle(image, (x0, y0), (x1, y1), tuple(round(c) for c in shade), -1)
        ink = _WHITE if fraction > 0.55 else _TEXT
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        _put(
            image,
            str(counts[name]),
            cx,
            cy,
            style.title * 1.5,
            color=ink,
            font=_TITLE_FONT,
            ha="center",
            va="bottom",
            thickness=_thickness(style.title * 1.5) + 1,
        )
        share = f"{100 * fraction:.1f}%" if total else "n/a"
        _put(image, share, cx, cy + style.px(8), style.label, color=ink, ha="center", va="top")
        _put(
            image,
            name.upper(),
            x0 + style.px(6),
            y0 + style.px(6),
            style.small,
            color=ink,
            va="top",
            thickness=1,
        )
    grid = (cells["tp"][0], cells["tp"][1], cells["tn"][2], cells["tn"][3])
    cv2.rectangle(image, grid[:2], grid[2:], _AXIS, 1)
    cv2.line(image, (cells["tn"][0], grid[1]), (cells["tn"][0], grid[3]), _AXIS, 1)
    cv2.line(image, (grid[0], cells["tn"][1]), (grid[2], cells["tn"][1]), _AXIS, 1)
    pad = style.px(12)
    _put(image, title, width / 2, pad, style.title, font=_TITLE_FONT, ha="center", va="top")
    _, label_h, label_b = _text_size("Ag", style.label)
    line_h = label_h + label_b + style.px(8)
    _put(
        image,
        "predicted",
        (grid[0] + grid[2]) / 2,
        grid[1] - line_h - style.px(4),
        style.label,
        ha="center",
        va="bottom",
    )
    for name, text in (("tp", "preterm"), ("fn", "control")):
        x0, _, x1, _ = cells[name]
        _put(
            image, text, (x0 + x1) / 2, grid[1] - style.px(6), style.label, ha="center", va="bottom"
        )
    for name, text in (("tp", "preterm"), ("fp", "control")):
        _, y0, _, y1 = cells[name]
        _put(
            image, text, grid[0] - style.px(8), (y0 + y1) / 2, style.label, ha="right", va="center"
        )
    _put_vertical(
        image,
        "true",
        grid[0] - _confusion_label_width(style) + (label_h + label_b) / 2,
        (grid[1] + grid[3]) / 2,
        style.label,
    )
    summary = (
        f"sensitivity {_ratio_text(counts['tp'], totals['preterm'])}   "
        f"specificity {_ratio_text(counts['tn'], totals['control'])}   "
        f"false positive rate {_ratio_text(counts['fp'], totals['control'])}"
    )
    summary_size = min(
        style.label,
        style.label * (width - 2 * pad) / _text_size(summary, style.label)[0],
    )
    _put(image, summary, width / 2, height - pad, summary_size, ha="center", va="bottom")
    return image


# Training curves

# (key, legend name, colour): mask in green, label in vermillion, total in blue, in both panels.
_LOSSES = (
    ("loss", "total loss", 0),
    ("mask_loss", "mask loss", 2),
    ("label_loss", "label loss", 1),
)
_METRICS = (("mask_iou", "mask IoU", 2), ("iou", "IoU", 2), ("label_auc", "label AUC", 1))


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Reads a Keras ``history.csv`` (``CSVLogger``) into ``{column: [value per epoch]}``.

    Empty cells become NaN. Raises ValueError naming the file, line and column of a cell that
    is not a number, or for a file without a header.
    """
    path = Path(path)
    with path.open(newline="") as handle:
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


def _history_series(
    history: Mapping[str, Any], x: np.ndarray, keys: Sequence[tuple[str, str, int]]
) -> list[Series]:
    series: list[Series] = []
    for key, name, color in keys:
        if key == "iou" and "mask_iou" in history:
            continue
        for prefix, suffix, dashed in (("", "train", False), ("val_", "val", True)):
            if prefix + key in history:
                y = _vector(prefix + key, history[prefix + key])
                series.append(
                    (f"{name} ({suffix})", x, y, {"color": PALETTE[color], "dashed": dashed})
                )
    return series


def training_curves_plot(
    history: Mapping[str, Sequence[float]], *, size: tuple[int, int] = (900, 420)
) -> np.ndarray:
    """Training curves in two panels: losses (left) and metrics in [0, 1] (right).

    Left: ``loss``, ``mask_loss``, ``label_loss``; right: ``mask_iou`` (or ``iou`` of a
    mask-only model) and ``label_auc``, with limits (0, 1); each where present. Validation
    curves (``val_`` columns) are dashed in the colour of their training curve. A panel with no
    column says so. The x axis is the epoch counted from 1 (``CSVLogger`` counts from 0),
    or the row number when there is no ``epoch`` column.

    Args:
        history: ``{column: values per epoch}``, e.g. from :func:`read_history`; all columns
            of the same length >= 1.
        size: ``(width, height)``. Defaults to (900, 420), at least (400, 200).

    Returns:
        ``uint8`` BGR image ``(height, width, 3)``.

    Raises:
        ValueError: On columns of different lengths, no rows, or none of the columns above.
    """
    if not isinstance(history, Mapping):
        raise ValueError(f"`history` must be a mapping of columns. Received: {type(history)}")
    lengths = {key: len(values) for key, values in history.items()}
    if len(set(lengths.values())) > 1 or not lengths or not next(iter(lengths.values())):
        raise ValueError(
            f"`history` columns must all hold the same number (>= 1) of rows. Received: {lengths}"
        )
    n_rows = next(iter(lengths.values()))
    if "epoch" in history:
        x = _vector("epoch", history["epoch"]) + 1.0
    else:
        x = np.arange(1.0, n_rows + 1.0)
    losses = _history_series(history, x, _LOSSES)
    metrics = _history_series(history, x, _METRICS)
    if not losses and not metrics:
        raise ValueError(
            "`history` has none of the columns loss, mask_loss, label_loss, mask_iou, iou, "
            f"label_auc (or their val_ forms). Received: columns {sorted(history)}"
        )
    width, height = _size(size, minimum=(400, 200))
    image = _canvas(width, height)
    half = width // 2
    x_finite = x[np.isfinite(x)]
    xlim = (
        _nice_limits(float(x_finite.min()), float(x_finite.max()), 1.0) if x_finite.size else None
    )
    for region, series, panel_title, ylabel, ylim in (
        ((0, 0, half, height), losses, "Loss", "loss", None),
        ((half, 0, width, height), metrics, "Metrics", "value", (0.0, 1.0)),
    ):
        _draw_line_chart(
            image,
            region,
            series,
            title=panel_title,
            xlabel="epoch",
            ylabel=ylabel,
            xlim=xlim or (0.0, 1.0),
            ylim=ylim,
            x_min_step=1.0,
            empty_message="not recorded",
        )
    return image


# Images


def _to_bgr(name: str, image: Any) -> np.ndarray:
    """``uint8`` BGR copy of a grey ``(H, W)``/``(H, W, 1)`` or BGR ``(H, W, 3)`` image.

    Floats must lie in [0, 1] (give or take 0.001, clipped; NaN as 0); uint16 maps 65535 to 255.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3) or 0 in array.shape:
        raise ValueError(
            f"`{name}` must be (H, W), (H, W, 1) or (H, W, 3). Received: shape {array.shape}"
        )
    if array.dtype == np.uint8:
        converted = array.copy()
    elif array.dtype == np.uint16:
        converted = np.round(array / 257.0).astype(np.uint8)
    elif array.dtype == np.bool_:
        converted = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        finite = array[np.isfinite(array)]
        if finite.size and (finite.min() < -1e-3 or finite.max() > 1.0 + 1e-3):
            raise ValueError(
                f"`{name}`: a float image must lie in [0, 1]. "
                f"Received: values in [{finite.min():g}, {finite.max():g}]"
            )
        converted = np.round(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"`{name}` must be uint8, uint16, bool or float. Received: {array.dtype}")
    return cv2.cvtColor(converted, cv2.COLOR_GRAY2BGR) if converted.ndim == 2 else converted


def _mask(name: str, mask: Any) -> np.ndarray:
    """A float32 ``(H, W)`` mask: integers and bools as 0/1 (> 0), floats as they are."""
    array = np.asarray(mask)
    array = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"`{name}` must be (H, W) or (H, W, 1). Received: shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        return np.nan_to_num(array.astype(np.float32))
    return (array > 0).astype(np.float32)


def _stack(images: Sequence[Any], axis: int, gap: int, background: int) -> np.ndarray:
    if not images:
        raise ValueError("`images` must hold at least one image. Received: []")
    tiles = [_to_bgr(f"images[{i}]", image) for i, image in enumerate(images)]
    extent = max(tile.shape[1 - axis] for tile in tiles)
    padded = []
    for index, tile in enumerate(tiles):
        missing = extent - tile.shape[1 - axis]
        before, after = missing // 2, missing - missing // 2
        pad = [(before, after), (0, 0), (0, 0)] if axis == 1 else [(0, 0), (before, after), (0, 0)]
        padded.append(np.pad(tile, pad, constant_values=background))
        if gap and index < len(tiles) - 1:
            shape = [extent, gap, 3] if axis == 1 else [gap, extent, 3]
            padded.append(np.full(shape, background, np.uint8))
    return np.concatenate(padded, axis=axis)


def hstack_images(images: Sequence[Any], *, gap: int = 0, background: int = 255) -> np.ndarray:
    """Images side by side, each centred vertically on ``background`` to the tallest height.

    Accepts what :func:`overlay_grid` accepts (grey or BGR; uint8, uint16, bool, float in
    [0, 1]). ``gap`` pixels of background separate them. Returns ``uint8`` BGR.
    """
    return _stack(images, 1, gap, background)


def vstack_images(images: Sequence[Any], *, gap: int = 0, background: int = 255) -> np.ndarray:
    """Images one above the other, each centred horizontally to the widest; as hstack_images."""
    return _stack(images, 0, gap, background)


def _fit(image: np.ndarray, tile: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image`` fit into a black ``tile``-pixel square; returns it and the content box."""
    height, width = image.shape[:2]
    factor = tile / max(height, width)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    x0, y0 = (tile - new_w) // 2, (tile - new_h) // 2
    square = np.zeros((tile, tile, 3), np.uint8)
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    square[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(
        image, (new_w, new_h), interpolation=interpolation
    )
    return square, (x0, y0, new_w, new_h)


def _outline(
    square: np.ndarray,
    mask: np.ndarray,
    box: tuple[int, int, int, int],
    color: Color,
    thickness: int,
) -> bool:
    """Draws the outline of ``mask > 0.5`` (resized to the content box); False if empty."""
    x0, y0, width, height = box
    resized = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    binary = np.zeros(square.shape[:2], np.uint8)
    binary[y0 : y0 + height, x0 : x0 + width] = resized > 0.5
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(square, contours, -1, color, thickness, _AA)
    return bool(contours)


def overlay_grid(
    rows: Sequence[tuple[str, Any, Any, Any]],
    *,
    titles: Sequence[str] | None = None,
    tile: int = 160,
) -> np.ndarray:
    """Segmentation examples: per row the image, the ground-truth and the predicted outline.

    Each row gets a caption above it (e.g. ``"best IoU 0.95"``) and three square tiles: the
    image; the image with the ground-truth outline in :data:`GREEN`; the image with the outline
    of the predicted mask (probability > 0.5) in :data:`MAGENTA`. Images keep their aspect
    ratio on black; masks may have another resolution (they are resized to the image's box).

    Args:
        rows: ``(caption, image, true_mask or None, predicted_probability or None)``; image
            grey ``(H, W)``/``(H, W, 1)`` or BGR ``(H, W, 3)``, uint8, uint16 or float in
            [0, 1]; the true mask positive where > 0.5 (integers: > 0), the prediction in
            [0, 1]. A missing mask leaves its tile without outline, marked "no mask".
        titles: Three column headers. Defaults to ("image", "ground truth", "prediction").
        tile: Tile side in pixels, >= 48. Defaults to 160.

    Returns:
        ``uint8`` BGR image; its height grows with the number of rows.
    """
    titles = ("image", "ground truth", "prediction") if titles is None else tuple(titles)
    if len(titles) != 3 or not all(isinstance(t, str) for t in titles):
        raise ValueError(f"`titles` must be three strings. Received: titles={titles!r}")
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < 48:
        raise ValueError(f"`tile` must be an integer >= 48. Received: tile={tile!r}")
    if not rows:
        raise ValueError("`rows` must hold at least one row. Received: rows=[]")
    tile = int(tile)
    style = _Style(max(0.35, tile / 160.0 * 0.8))
    gap = max(4, tile // 20)
    _, text_h, text_b = _text_size("Ag", style.label)
    line_h = text_h + text_b + gap
    outline = max(1, round(tile / 80))
    blocks = []
    header = _canvas(3 * tile + 4 * gap, line_h + gap)
    for column, text in enumerate(titles):
        _put(
            header,
            text,
            gap + column * (tile + gap) + tile / 2,
            gap,
            style.label,
            ha="center",
            va="top",
        )
    blocks.append(header)
    for index, row in enumerate(rows):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != 4:
            raise ValueError(
                f"`rows[{index}]` must be (caption, image, true_mask, predicted). Received: {row!r}"
            )
        caption, image, truth, prediction = row
        square, box = _fit(_to_bgr(f"rows[{index}] image", image), tile)
        tiles = [square]
        for mask, color, name in ((truth, GREEN, "true_mask"), (prediction, MAGENTA, "predicted")):
            overlay = square.copy()
            if mask is None:
                note = "no mask"
            else:
                drawn = _outline(overlay, _mask(f"rows[{index}] {name}", mask), box, color, outline)
                note = "" if drawn else "empty mask"
            if note:
                _put(
                    overlay,
                    note,
                    tile / 2,
                    tile - gap,
                    style.small,
                    color=(200, 200, 200),
                    ha="center",
                    va="bottom",
                    thickness=1,
                )
            tiles.append(overlay)
        block = _canvas(3 * tile + 4 * gap, line_h + tile + gap)
        _put(block, str(caption), gap, gap // 2, style.label, va="top")
        for column, content in enumerate(tiles):
            x0 = gap + column * (tile + gap)
            block[line_h : line_h + tile, x0 : x0 + tile] = content
        blocks.append(block)
    return np.concatenate(blocks, axis=0)
