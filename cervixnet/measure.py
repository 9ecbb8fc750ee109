"""Clinical measurements from a mask and its pixel spacing: cervical length, the ellipse-fit
circumference and area.

NumPy, SciPy and OpenCV only (no Keras, no TensorFlow). A mask is a 2-D array, non-zero inside the
structure; ``spacing`` is the physical size of a pixel in mm, one number, or ``(row, column)``
(``(dy, dx)``) where the two differ. Without spacing every figure is in pixels, and the
function says so in its result's ``unit``::

    cervical_length(mask, spacing=0.2)                          # Measurement(value, "mm")
    circumference = ellipse_circumference(mask, spacing=0.154)   # Measurement(value, "mm")
    area(mask, spacing=(0.1, 0.12))                             # Measurement(value, "mm2")

The cervical length is the length of the mask's central line from one end to the other (os to
os): :func:`medial_path` finds the two ends of the longest path inside the mask and the path
between them that keeps furthest from the boundary, so it follows a curved cervix.

The ellipse is fitted to the outline in physical coordinates (each point scaled by its axis'
spacing), so a scan with non-square pixels is measured as it is, not as it looks.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

__all__ = [
    "MEASUREMENTS",
    "Measurement",
    "area",
    "canal_length",
    "cervical_length",
    "ellipse_circumference",
    "ellipse_fit",
    "measure",
    "medial_path",
    "pixel_spacing",
]

# The measurements cervixnet reports, each by its output name's stem; a name ends in ``_mm``
# (``_mm2``) when spacing is known, ``_px`` (``_px2``) when it is not.
MEASUREMENTS = ("cervical_length", "head_circumference", "area")
# The central line is smoothed over this many pixels (Gaussian sigma) before it is measured:
# a path on the pixel grid zigzags, and its length would exceed the line's by up to 8 %.
_PATH_SMOOTHING_PX = 2.0


@dataclass(frozen=True)
class Measurement:
    """A measured value and its unit: ``"mm"`` / ``"mm2"`` with spacing, ``"px"`` / ``"px2"``
    without; NaN when the mask holds nothing to measure."""

    value: float
    unit: str


@dataclass(frozen=True)
class Ellipse:
    """An ellipse fitted to a mask's outline, in the unit of the spacing given.

    Attributes:
        centre: ``(x, y)``.
        axes: the full lengths of the major and the minor axis, major first.
        angle_degrees: the major axis' angle from the x axis.
        unit: ``"mm"`` or ``"px"``.
    """

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle_degrees: float
    unit: str

    @property
    def circumference(self) -> float:
        """Ramanujan's second approximation of the perimeter: relative error under 1e-6 for
        axis ratios up to 3 (heads, organs), 1e-4 at 20."""
        a, b = self.axes[0] / 2, self.axes[1] / 2
        h = ((a - b) / (a + b)) ** 2 if a + b > 0 else 0.0
        return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def pixel_spacing(spacing: Any) -> tuple[float, float] | None:
    """``spacing`` as ``(dy, dx)`` in mm, or None for no spacing.

    Args:
        spacing: None, one number (square pixels) or ``(dy, dx)``; each finite and > 0.

    Raises:
        ValueError: naming what was received, for anything else.
    """
    if spacing is None:
        return None
    values = (spacing, spacing) if isinstance(spacing, numbers.Real) else spacing
    try:
        dy, dx = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"`spacing` must be None, a number of mm per pixel or (dy, dx). Received: {spacing!r}"
        ) from None
    if isinstance(spacing, bool) or not all(math.isfinite(v) and v > 0 for v in (dy, dx)):
        raise ValueError(
            f"`spacing` must be finite and > 0 mm per pixel. Received: spacing={spacing!r}"
        )
    return dy, dx


def _mask(mask: Any) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"`mask` must have shape (H, W). Received: mask.shape={mask.shape}")
    return mask != 0


def _largest_part(mask: Any) -> np.ndarray:
    """The largest 8-connected part of ``mask`` (bool ``(H, W)``; all False if empty)."""
    inside = _mask(mask).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inside, connectivity=8)
    if count < 2:
        return np.zeros(inside.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _pixel_graph(
    part: np.ndarray, dy: float, dx: float, depth: np.ndarray
) -> tuple[sparse.csr_matrix, sparse.csr_matrix, np.ndarray]:
    """The 8-neighbour graph of ``part``'s pixels: edge lengths in the spacing's unit, and the
    same edges weighted by ``length / depth**2`` (cheap far from the boundary)."""
    rows, cols = np.nonzero(part)
    index = np.full(part.shape, -1, np.int64)
    index[rows, cols] = np.arange(rows.size)
    heads, tails, lengths = [], [], []
    height, width = part.shape
    for oy, ox in ((0, 1), (1, 0), (1, 1), (1, -1)):
        r, c = rows + oy, cols + ox
        valid = (r < height) & (c >= 0) & (c < width)
        valid[valid] = part[r[valid], c[valid]]
        heads.append(index[rows[valid], cols[valid]])
        tails.append(index[r[valid], c[valid]])
        lengths.append(np.full(int(valid.sum()), math.hypot(oy * dy, ox * dx)))
    head, tail, length = np.concatenate(heads), np.concatenate(tails), np.concatenate(lengths)
    centre_depth = depth[rows, cols]
    mean_depth = (centre_depth[head] + centre_depth[tail]) / 2
    shape = (rows.size, rows.size)
    plain = sparse.csr_matrix((length, (head, tail)), shape=shape)
    centred = sparse.csr_matrix((length / mean_depth**2, (head, tail)), shape=shape)
    return plain, centred, np.stack([cols, rows], axis=1).astype(np.float64)


def medial_path(mask: Any, spacing: Any = None) -> np.ndarray | None:
    """The central line of the mask's largest part from one end to the other, in pixels.

    The ends are the two pixels furthest apart along paths inside the mask (the farthest pixel
    from the deepest one, then the farthest from that, by Dijkstra on the 8-neighbour graph in
    physical units). The line between them is the path whose steps cost ``length / depth**2``,
    ``depth`` being the distance to the boundary: it runs along the middle of a straight or a
    curved shape and out to its two tips. It is then smoothed (Gaussian, sigma 2 pixels,
    ends kept). None when the part has fewer than 2 pixels.

    Returns:
        float64 ``(N, 2)`` points ``(x, y)`` (column, row) from one end to the other.
    """
    part = _largest_part(mask)
    if np.count_nonzero(part) < 2:
        return None
    scale = pixel_spacing(spacing)
    dy, dx = scale if scale is not None else (1.0, 1.0)
    depth = ndimage.distance_transform_edt(np.pad(part, 1), sampling=(dy, dx))[1:-1, 1:-1]
    plain, centred, points = _pixel_graph(part, dy, dx, depth)
    deepest = int(np.argmax(depth[part]))
    distances = csgraph.dijkstra(plain, directed=False, indices=deepest)
    start = int(np.argmax(np.where(np.isfinite(distances), distances, -1.0)))
    distances = csgraph.dijkstra(plain, directed=False, indices=start)
    end = int(np.argmax(np.where(np.isfinite(distances), distances, -1.0)))
    _, predecessors = csgraph.dijkstra(
        centred, directed=False, indices=start, return_predecessors=True
    )
    order = [end]
    while order[-1] != start:
        order.append(int(predecessors[order[-1]]))
    path = points[order[::-1]]
    if len(path) > 2:
        smoothed = ndimage.gaussian_filter1d(path, _PATH_SMOOTHING_PX, axis=0, mode="nearest")
        smoothed[0], smoothed[-1] = path[0], path[-1]
        path = smoothed
    return path


def cervical_length(mask: Any, spacing: Any = None) -> Measurement:
    """The length of the cervix os to os: the length of :func:`medial_path` (``"mm"`` with
    spacing, ``"px"`` without; NaN for an empty mask, 0 for a single pixel).

    The line runs between pixel centres at the two tips, so it is about one pixel shorter than
    the outline it was drawn from.

    Args:
        mask: ``(H, W)``, non-zero inside; only its largest connected part is measured.
        spacing: None, mm per pixel, or ``(dy, dx)``.
    """
    scale = pixel_spacing(spacing)
    unit = "mm" if scale is not None else "px"
    part = _largest_part(mask)
    if not part.any():
        return Measurement(math.nan, unit)
    path = medial_path(part, spacing)
    if path is None:
        return Measurement(0.0, unit)
    dy, dx = scale if scale is not None else (1.0, 1.0)
    steps = np.diff(path, axis=0) * np.array([dx, dy])
    return Measurement(float(np.hypot(steps[:, 0], steps[:, 1]).sum()), unit)


def canal_length(mask: Any, spacing: Any = None, first: int = 1, second: int = 2) -> Measurement:
    """The length of the canal between two classes of a class-id mask (e.g. the anterior lip
    ``first`` and the posterior lip ``second``), from one end of their interface to the other:
    the internal os, where the lips meet inside, to the external os.

    The cervix (both classes, a thin gap of background between them, the pixels within one
    pixel of both, and any hole of background inside) is split between the two, each pixel to
    the nearer class in mm; the canal is where the two parts meet. So a canal drawn as a gap,
    or lips that a prediction leaves broken by holes, still give one canal across. Its largest
    part is measured as :func:`cervical_length` measures a mask, along its central line. NaN
    when either class is missing or the two do not meet.

    Args:
        mask: ``(H, W)`` integer class ids (0 background).
        spacing: None, mm per pixel, or ``(dy, dx)``.
        first, second: the two class ids. Defaults to 1 and 2.
    """
    ids = np.asarray(mask)
    if ids.ndim == 3 and ids.shape[-1] == 1:
        ids = ids[..., 0]
    if ids.ndim != 2:
        raise ValueError(f"`mask` must have shape (H, W). Received: mask.shape={ids.shape}")
    unit = "mm" if pixel_spacing(spacing) is not None else "px"
    one, other = ids == first, ids == second
    if not one.any() or not other.any():
        return Measurement(math.nan, unit)
    near = np.ones((3, 3), np.uint8)
    grown_one = cv2.dilate(one.astype(np.uint8), near) > 0
    grown_other = cv2.dilate(other.astype(np.uint8), near) > 0
    cervix = ndimage.binary_fill_holes(one | other | (grown_one & grown_other))
    sampling = pixel_spacing(spacing) or (1.0, 1.0)
    to_one = ndimage.distance_transform_edt(~one, sampling=sampling)
    to_other = ndimage.distance_transform_edt(~other, sampling=sampling)
    side_one = cervix & (to_one <= to_other)
    side_other = cervix & ~side_one
    interface = cervix & (
        (side_one & (cv2.dilate(side_other.astype(np.uint8), near) > 0))
        | (side_other & (cv2.dilate(side_one.astype(np.uint8), near) > 0))
    )
    if not interface.any():
        return Measurement(math.nan, unit)
    return cervical_length(interface, spacing)


def area(mask: Any, spacing: Any = None) -> Measurement:
    """The mask's area: its pixel count times ``dy * dx`` (``"mm2"``), or in pixels (``"px2"``).

    Every pixel counts whole, those on a drawn outline too.

    Args:
        mask: ``(H, W)``, non-zero inside.
        spacing: None, mm per pixel, or ``(dy, dx)``.
    """
    inside = _mask(mask)
    scale = pixel_spacing(spacing)
    count = float(np.count_nonzero(inside))
    if scale is None:
        return Measurement(count, "px2")
    return Measurement(count * scale[0] * scale[1], "mm2")


def ellipse_fit(mask: Any, spacing: Any = None) -> Ellipse | None:
    """The ellipse fitted to the outline of the mask's largest connected part, in mm when
    ``spacing`` is given; None when that part has fewer than 5 outline points.

    The outline is the boundary pixels' centres, scaled by the spacing and fitted by least
    squares (``cv2.fitEllipseDirect``): the convention of masks drawn by filling an annotated
    outline (``cv2.ellipse``, ``cv2.fillPoly``), whose boundary pixels lie on it. HC18's
    reference masks measured so reproduce the sonographers' head circumference to 0.08 mm.
    """
    part = _largest_part(mask).astype(np.uint8)
    if not part.any():
        return None
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = max(contours, key=len)[:, 0, :].astype(np.float64)  # (x, y) pixel centres
    if len(points) < 5:
        return None
    scale = pixel_spacing(spacing)
    dy, dx = scale if scale is not None else (1.0, 1.0)
    fitted = points * np.array([dx, dy])
    (cx, cy), (width, height), angle = cv2.fitEllipseDirect(fitted.astype(np.float32))
    if height > width:
        width, height, angle = height, width, angle + 90.0
    return Ellipse((float(cx), float(cy)), (float(width), float(height)), float(angle % 180.0),
                   "mm" if scale is not None else "px")  # fmt: skip


def ellipse_circumference(mask: Any, spacing: Any = None) -> Measurement:
    """The circumference of the ellipse fitted to the mask (:func:`ellipse_fit`): the fetal
    head circumference of HC18. ``"mm"`` with spacing, ``"px"`` without; NaN for a mask with
    nothing to fit."""
    fitted = ellipse_fit(mask, spacing)
    unit = "mm" if pixel_spacing(spacing) is not None else "px"
    return Measurement(math.nan if fitted is None else fitted.circumference, unit)


def measure(
    mask: Any, spacing: Any = None, names: Any = None, classes: int = 1
) -> dict[str, float]:
    """Every measurement of :data:`MEASUREMENTS` of one mask, keyed by output name.

    Args:
        mask: ``(H, W)``, non-zero inside (class ids for several classes; the measurements
            of :data:`MEASUREMENTS` take their union).
        spacing: None, mm per pixel, or ``(dy, dx)``.
        names: keep only these output names (e.g. ``["head_circumference_mm"]``); the others
            are not computed. Default: all.
        classes: the mask's classes. With two or more (the anterior and posterior lip as ids
            1 and 2), :func:`canal_length` between them comes first, as ``canal_length_mm``.
            Defaults to 1.

    Returns:
        ``{"cervical_length_mm": ..., "head_circumference_mm": ..., "area_mm2": ...}`` with
        spacing, the ``_px`` / ``_px2`` names without; NaN where there is nothing to measure.
    """
    unit = "mm" if pixel_spacing(spacing) is not None else "px"
    functions = {
        **({f"canal_length_{unit}": canal_length} if classes >= 2 else {}),
        f"cervical_length_{unit}": cervical_length,
        f"head_circumference_{unit}": ellipse_circumference,
        f"area_{unit}2": area,
    }
    wanted = list(functions) if names is None else list(names)
    unknown = [name for name in wanted if name not in functions]
    if unknown:
        raise ValueError(
            f"`names` must be among {list(functions)} for spacing={spacing!r}. Received: {unknown}"
        )
    return {name: functions[name](mask, spacing).value for name in wanted}
