"""Four control points to a cervix outline and mask: the two readings of the paper.

An annotation is four control points ``(x, y)`` in image pixels. Cubic Bézier curves built
from them outline the cervix, and the filled outline is the mask. The paper does not say how
four points make a closed outline, so two readings are supported (see
``docs/synthetic-data.md`` for a picture of both):

``"smooth"`` (default)
    A smooth closed curve *through* the four points: four cubic Bézier segments, one between
    each consecutive pair ``p0 -> p1 -> p2 -> p3 -> p0``. The tangent at each point comes from
    its two neighbours (a closed Catmull-Rom spline converted to Bézier form): at point ``i``
    the tangent is ``m_i = (1 - tension) * (p[i+1] - p[i-1]) / 2`` and the segment from
    ``p_i`` to ``p_{i+1}`` has the Bézier control points
    ``p_i, p_i + m_i / 3, p_{i+1} - m_{i+1} / 3, p_{i+1}``. ``tension=0`` is the classic
    Catmull-Rom spline; ``tension=1`` gives straight edges (the quadrilateral itself).

``"chord"``
    One cubic Bézier with the four points as its control polygon (it starts at ``p0``, ends
    at ``p3`` and only approaches ``p1`` and ``p2``), closed by the straight chord from ``p3``
    back to ``p0``.

Coordinates follow OpenCV: ``x`` is the column, ``y`` the row, and the centre of pixel
``(row, col)`` sits at ``(x, y) = (col, row)``. :func:`rasterize` uses ``cv2.fillPoly`` at
1/16 pixel precision: a pixel belongs to the mask when its centre lies inside the outline or
within about half a pixel of it (OpenCV also fills the pixels the boundary runs through), so
a mask's area exceeds the outline's by about half its perimeter.

The manifest stores the points as text, ``"x0,y0 x1,y1 x2,y2 x3,y3"``: see
:func:`parse_points` and :func:`format_points`.
"""

from __future__ import annotations

import cv2
import numpy as np

from cervixnet.errors import DataError

MODES = ("smooth", "chord")
_SHIFT = 4  # cv2.fillPoly fractional bits: coordinates at 1/16 pixel precision


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}. Received: mode={mode!r}")


def _check_points(points: np.ndarray | list) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (4, 2):
        raise ValueError(
            f"`points` must have shape (4, 2): four (x, y) control points. "
            f"Received: points with shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`points` must be finite numbers. Received: points={array.tolist()}")
    return array


def _cubic(b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Evaluates the cubic Bézier with control points ``b`` (4, 2) at parameters ``t`` (K,)."""
    t = t[:, None]
    u = 1.0 - t
    return u**3 * b[0] + 3 * u**2 * t * b[1] + 3 * u * t**2 * b[2] + t**3 * b[3]


def smooth_segments(points: np.ndarray | list, tension: float = 0.0) -> np.ndarray:
    """The four cubic Bézier segments of the ``"smooth"`` reading.

    Args:
        points: four control points, shape (4, 2), in order around the outline.
        tension: 0 (Catmull-Rom, the default) to 1 (straight edges).

    Returns:
        Array of shape (4, 4, 2): segment ``i`` runs from ``points[i]`` to
        ``points[(i + 1) % 4]`` and holds its four Bézier control points.
    """
    p = _check_points(points)
    if not 0.0 <= tension <= 1.0:
        raise ValueError(f"`tension` must be in [0, 1]. Received: tension={tension}")
    tangents = (1.0 - tension) * (np.roll(p, -1, axis=0) - np.roll(p, 1, axis=0)) / 2.0
    nxt = np.roll(p, -1, axis=0)
    nxt_tangents = np.roll(tangents, -1, axis=0)
    return np.stack([p, p + tangents / 3.0, nxt - nxt_tangents / 3.0, nxt], axis=1)


def outline(
    points: np.ndarray | list,
    mode: str = "smooth",
    samples: int = 64,
    tension: float = 0.0,
) -> np.ndarray:
    """Samples the closed outline defined by four control points.

    Args:
        points: four control points ``(x, y)`` in image pixels, shape (4, 2).
        mode: ``"smooth"`` (curve through the points) or ``"chord"`` (one Bézier with the
            points as control polygon, closed by the chord ``p3 -> p0``).
        samples: points per cubic segment, at least 2.
        tension: ``"smooth"`` mode only: 0 (Catmull-Rom) to 1 (straight edges).

    Returns:
        Float array of shape (K, 2), a closed polygon (the last vertex joins the first).
        ``"smooth"``: ``K = 4 * samples`` and vertex ``i * samples`` is ``points[i]`` exactly.
        ``"chord"``: ``K = samples + 1``, from ``points[0]`` to ``points[3]``; the closing
        edge back to ``points[0]`` is the chord.
    """
    _check_mode(mode)
    if int(samples) != samples or samples < 2:
        raise ValueError(f"`samples` must be an integer >= 2. Received: samples={samples}")
    samples = int(samples)
    if mode == "chord":
        p = _check_points(points)
        t = np.linspace(0.0, 1.0, samples + 1)
        curve = _cubic(p, t)
        curve[0], curve[-1] = p[0], p[3]
        return curve
    segments = smooth_segments(points, tension=tension)
    t = np.arange(samples) / samples
    curve = np.concatenate([_cubic(segment, t) for segment in segments], axis=0)
    curve[::samples] = segments[:, 0]
    return curve


def rasterize(
    points: np.ndarray | list,
    height: int,
    width: int,
    mode: str = "smooth",
    tension: float = 0.0,
) -> np.ndarray:
    """Fills the outline of four control points into a binary mask.

    Args:
        points: four control points ``(x, y)`` in image pixels, shape (4, 2).
        height: mask height in pixels.
        width: mask width in pixels.
        mode: ``"smooth"`` or ``"chord"``, as in :func:`outline`.
        tension: ``"smooth"`` mode only, as in :func:`outline`.

    Returns:
        uint8 array of shape (height, width), 1 inside the outline and 0 outside.
    """
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise ValueError(
            f"`height` and `width` must be positive integers. "
            f"Received: height={height}, width={width}"
        )
    curve = outline(points, mode=mode, samples=64, tension=tension)
    fixed = np.round(curve * (1 << _SHIFT)).astype(np.int32)
    mask = np.zeros((int(height), int(width)), dtype=np.uint8)
    cv2.fillPoly(mask, [fixed], color=1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def parse_points(text: str) -> np.ndarray:
    """Parses the manifest form ``"x0,y0 x1,y1 x2,y2 x3,y3"`` into a (4, 2) float array.

    Raises:
        DataError: (a ``ValueError``) quoting the text, when it does not hold exactly four
            ``x,y`` pairs of finite numbers.
    """
    if not isinstance(text, str):
        raise DataError(
            f'Control points must be text of the form "x0,y0 x1,y1 x2,y2 x3,y3". Received: {text!r}'
        )
    pairs = text.split()
    if len(pairs) != 4:
        raise DataError(
            f'Control points must be four "x,y" pairs separated by spaces, '
            f'e.g. "10,20 30,5 50,20 30,40"; found {len(pairs)}. Received: {text!r}'
        )
    points = np.empty((4, 2), dtype=np.float64)
    for i, pair in enumerate(pairs):
        parts = pair.split(",")
        if len(parts) != 2:
            raise DataError(
                f'Control point {i} must be "x,y" (two numbers and one comma), '
                f"got {pair!r}. Received: {text!r}"
            )
        try:
            points[i] = [float(parts[0]), float(parts[1])]
        except (ValueError, OverflowError):
            raise DataError(
                f"Control point {i} must hold two numbers, got {pair!r}. Received: {text!r}"
            ) from None
        if not np.all(np.isfinite(points[i])):
            raise DataError(
                f"Control point {i} must hold finite numbers, got {pair!r}. Received: {text!r}"
            )
    return points


def split_class(annotation: str) -> tuple[str | None, str]:
    """One annotation of a ``bezier`` cell as ``(class name or None, points text)``:
    ``"anterior_lip: 10,20 30,5 50,20 30,40"`` names its class, ``"10,20 ..."`` does not.

    Raises:
        DataError: a class name that is not a name (letters, digits and ``_``), quoting it.
    """
    name, colon, points = annotation.partition(":")
    if not colon:
        return None, annotation.strip()
    name = name.strip()
    if not name.isidentifier():
        raise DataError(
            "An annotation's class must be a name (letters, digits and _) before ':', e.g. "
            f'"anterior_lip: 10,20 30,5 50,20 30,40". Received: {name!r}'
        )
    return name, points.strip()


def format_points(points: np.ndarray | list) -> str:
    """Writes four control points as ``"x0,y0 x1,y1 x2,y2 x3,y3"`` with one decimal place.

    The inverse of :func:`parse_points` (up to the rounding to 0.1 pixel).
    """
    p = _check_points(points)
    # `+ 0.0` turns a rounded -0.0 into 0.0 so the text never shows "-0.0".
    return " ".join(f"{round(x, 1) + 0.0:.1f},{round(y, 1) + 0.0:.1f}" for x, y in p)
