"""Measurements from masks (``cervixnet.measure``) on shapes whose answers are known."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from cervixnet.measure import (
    Ellipse,
    Measurement,
    area,
    ellipse_circumference,
    ellipse_fit,
    pixel_spacing,
)

SHIFT = 8  # sub-pixel bits for OpenCV's drawing


def _ellipse_mask(semi_axes_mm, angle, spacing, margin=6):
    """A filled ellipse of the given semi-axes (mm) and angle, drawn on a grid of ``spacing``
    (dy, dx) mm per pixel as an annotation is drawn: its outline filled with cv2.fillPoly."""
    a, b = semi_axes_mm
    dy, dx = spacing
    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    theta = math.radians(angle)
    x = a * np.cos(t) * math.cos(theta) - b * np.sin(t) * math.sin(theta)
    y = a * np.cos(t) * math.sin(theta) + b * np.sin(t) * math.cos(theta)
    height, width = int(2 * a / dy) + 2 * margin, int(2 * a / dx) + 2 * margin
    columns = x / dx + width / 2 + 0.37
    rows = y / dy + height / 2 - 0.21
    points = np.round(np.stack([columns, rows], 1) * (1 << SHIFT)).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [points], 255, lineType=cv2.LINE_8, shift=SHIFT)
    return mask


def _perimeter(a: float, b: float) -> float:
    """A reference perimeter by numerical integration (independent of Ramanujan's formula)."""
    t = np.linspace(0, 2 * np.pi, 200_001)
    return float(np.trapezoid(np.hypot(a * np.sin(t), b * np.cos(t)), t))


@pytest.mark.parametrize("semi_axes", [(60.0, 45.0), (40.0, 16.0), (25.0, 24.0)])
@pytest.mark.parametrize("angle", [0.0, 23.0, 90.0])
@pytest.mark.parametrize("spacing", [(0.2, 0.2), (0.15, 0.25), (0.3, 0.2)])
def test_ellipse_circumference_within_half_a_percent(semi_axes, angle, spacing):
    mask = _ellipse_mask(semi_axes, angle, spacing)
    measured = ellipse_circumference(mask, spacing)
    assert measured.unit == "mm"
    expected = _perimeter(*semi_axes)
    assert measured.value == pytest.approx(expected, rel=0.005)
    fitted = ellipse_fit(mask, spacing)
    assert fitted.axes[0] >= fitted.axes[1]
    assert fitted.axes == pytest.approx((2 * semi_axes[0], 2 * semi_axes[1]), rel=0.01)
    if semi_axes[0] / semi_axes[1] > 1.2:  # the angle of a near-circle is arbitrary
        assert min(abs(fitted.angle_degrees - angle), 180 - abs(fitted.angle_degrees - angle)) < 1


def test_ramanujans_perimeter_against_integration():
    for a, b, tolerance in [(10.0, 10.0, 1e-9), (10.0, 3.0, 1e-6), (10.0, 0.5, 1e-4)]:
        ellipse = Ellipse((0.0, 0.0), (2 * a, 2 * b), 0.0, "mm")
        assert ellipse.circumference == pytest.approx(_perimeter(a, b), rel=tolerance)


def test_area_of_a_rectangle_and_an_ellipse_and_its_units():
    rectangle = np.zeros((50, 60), bool)
    rectangle[10:30, 5:45] = True
    assert area(rectangle, (0.15, 0.25)) == Measurement(pytest.approx(20 * 0.15 * 40 * 0.25), "mm2")
    spacing = (0.15, 0.25)
    mask = _ellipse_mask((40.0, 30.0), 30.0, spacing)
    # Every pixel on the drawn outline counts: half a pixel's ring beyond it, 0.6 % here.
    assert area(mask, spacing).value == pytest.approx(math.pi * 40 * 30, rel=0.01)
    pixels = area(mask)
    assert pixels.unit == "px2" and pixels.value == np.count_nonzero(mask)
    assert ellipse_circumference(mask).unit == "px"


def test_only_the_largest_part_is_fitted_and_an_empty_mask_measures_nan():
    mask = _ellipse_mask((30.0, 20.0), 10.0, (0.2, 0.2))
    alone = ellipse_circumference(mask, 0.2).value
    mask[:4, :4] = 255  # a speck in a corner
    assert ellipse_circumference(mask, 0.2).value == alone
    empty = np.zeros((20, 20), np.uint8)
    assert math.isnan(ellipse_circumference(empty, 0.2).value)
    assert area(empty, 0.2).value == 0.0
    tiny = empty.copy()
    tiny[5, 5:7] = 1  # two pixels: too few outline points for an ellipse
    assert ellipse_fit(tiny) is None


@pytest.mark.parametrize(
    "spacing", [0, -0.1, float("nan"), float("inf"), "0.2", True, (0.1,), (0.1, 0.0), "a"]
)
def test_bad_spacing_is_refused_with_what_was_received(spacing):
    with pytest.raises(ValueError, match="Received"):
        pixel_spacing(spacing)
    with pytest.raises(ValueError, match="Received"):
        ellipse_circumference(np.ones((8, 8)), spacing)


def test_spacing_forms():
    assert pixel_spacing(None) is None
    assert pixel_spacing(0.2) == (0.2, 0.2)
    assert pixel_spacing(np.float32(0.5)) == (0.5, 0.5)
    assert pixel_spacing([0.1, 0.3]) == (0.1, 0.3)
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        area(np.ones((2, 3, 4)))
