"""Measurements from masks (``cervixnet.measure``) on shapes whose answers are known."""

from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from cervixnet.data.synthetic import SyntheticSpec, generate
from cervixnet.measure import (
    Ellipse,
    Measurement,
    area,
    cervical_length,
    ellipse_circumference,
    ellipse_fit,
    measure,
    medial_path,
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


def _band(radius_mm, degrees, half_width_mm, spacing, rotation=0.0):
    """The pixels within ``half_width_mm`` of an arc of ``radius_mm`` spanning ``degrees``: a
    curved band with round ends, whose centreline from tip to tip is ``radius * angle +
    2 * half_width`` long (``degrees`` 0: a straight band of length ``radius_mm``). Also the
    side of each pixel: above (-1) or below (+1) the centreline extended through the ends."""
    dy, dx = spacing
    extent = 2 * (radius_mm + half_width_mm) + 4 * max(dy, dx)
    height, width = int(extent / dy), int(extent / dx)
    rows, columns = np.mgrid[:height, :width]
    y, x = (rows - height / 2) * dy, (columns - width / 2) * dx
    turn = math.radians(rotation)
    x, y = x * math.cos(turn) + y * math.sin(turn), -x * math.sin(turn) + y * math.cos(turn)
    if degrees == 0:
        along = np.clip(x, -radius_mm / 2, radius_mm / 2)
        distance = np.hypot(x - along, y)
        band = (distance <= half_width_mm).astype(np.uint8)
        return band, radius_mm + 2 * half_width_mm, np.sign(y)
    span = math.radians(degrees)
    y = y + radius_mm / 2  # centre the arc's chord
    angle = np.clip(np.arctan2(x, y), -span / 2, span / 2)
    nearest = radius_mm * np.stack([np.sin(angle), np.cos(angle)])
    distance = np.hypot(x - nearest[0], y - nearest[1])
    band = (distance <= half_width_mm).astype(np.uint8)
    side = np.sign(x * np.sin(angle) + y * np.cos(angle) - radius_mm)
    return band, radius_mm * span + 2 * half_width_mm, side


def _band_mask(radius_mm, degrees, half_width_mm, spacing, rotation=0.0):
    band, length, _ = _band(radius_mm, degrees, half_width_mm, spacing, rotation)
    return band, length


@pytest.mark.parametrize(
    ("radius", "degrees", "half_width", "spacing", "rotation"),
    [
        (30.0, 0, 4.0, (0.2, 0.2), 20.0),  # straight
        (25.0, 60, 3.0, (0.2, 0.2), 0.0),
        (20.0, 100, 3.0, (0.15, 0.25), 35.0),  # strongly curved, non-square pixels
        (40.0, 45, 5.0, (0.3, 0.2), 110.0),
    ],
)
def test_cervical_length_follows_a_curved_band_tip_to_tip(
    radius, degrees, half_width, spacing, rotation
):
    mask, length = _band_mask(radius, degrees, half_width, spacing, rotation)
    measured = cervical_length(mask, spacing)
    assert measured.unit == "mm"
    # Within 0.5 %, and a pixel: pixel centres at the tips lie inside the drawn ends.
    assert abs(measured.value - length) <= 0.005 * length + max(spacing)
    path = medial_path(mask, spacing)
    rows, columns = np.round(path[:, 1]).astype(int), np.round(path[:, 0]).astype(int)
    assert mask[rows, columns].all()  # the line runs inside the band


def test_cervical_length_in_pixels_and_its_edge_cases():
    mask, _ = _band_mask(30.0, 0, 4.0, (1.0, 1.0))
    assert cervical_length(mask) == Measurement(cervical_length(mask, 1.0).value, "px")
    assert math.isnan(cervical_length(np.zeros((9, 9), np.uint8), 0.2).value)
    single = np.zeros((9, 9), np.uint8)
    single[4, 4] = 1
    assert cervical_length(single, 0.2) == Measurement(0.0, "mm")
    speck = mask.copy()
    speck[:2, :2] = 1  # another part: only the largest is measured
    assert cervical_length(speck).value == cervical_length(mask).value


def test_measure_names_each_figure_by_its_unit():
    mask, _ = _band_mask(30.0, 0, 4.0, (0.2, 0.2))
    in_mm = measure(mask, 0.2)
    assert list(in_mm) == ["cervical_length_mm", "head_circumference_mm", "area_mm2"]
    assert in_mm["area_mm2"] == area(mask, 0.2).value
    assert list(measure(mask)) == ["cervical_length_px", "head_circumference_px", "area_px2"]


def test_cervical_length_on_the_synthetic_sets_known_lengths(tmp_path):
    """Os to os against ``cervical_length_mm``, the straight distance between the two os
    control points (on the outline); every synthetic cervix is longer than wide."""
    manifest = generate(tmp_path / "synthetic", SyntheticSpec(n_images=40, n_preterm=8))
    rows = list(csv.DictReader(manifest.open()))
    errors = []
    for row in rows:
        mask = cv2.imread(str(manifest.parent / row["mask"]), cv2.IMREAD_GRAYSCALE)
        measured = cervical_length(mask, float(row["pixel_spacing_mm"])).value
        errors.append(measured - float(row["cervical_length_mm"]))
    assert len(errors) == 40
    assert np.mean(np.abs(errors)) < 1.0 and np.max(np.abs(errors)) < 2.0


@pytest.mark.parametrize(
    ("radius", "degrees", "half_width", "spacing", "rotation"),
    [(30.0, 0, 4.0, (0.2, 0.2), 20.0), (25.0, 60, 3.0, (0.15, 0.25), 35.0)],
)
def test_canal_length_follows_the_interface_between_two_lips(
    radius, degrees, half_width, spacing, rotation
):
    """A band split along its centreline into two lips (class ids 1 and 2): the canal between
    them runs tip to tip, as long as the band's centreline; a canal drawn as a one-pixel gap
    of background, or broken by a hole, measures the same."""
    from cervixnet.measure import canal_length

    band, length, side = _band(radius, degrees, half_width, spacing, rotation)
    ids = np.where(band > 0, np.where(side < 0, 1, 2), 0).astype(np.uint8)
    assert ndimage.label(ids == 1)[1] == ndimage.label(ids == 2)[1] == 1  # one lip each
    measured = canal_length(ids, spacing)
    assert measured.unit == "mm"
    assert abs(measured.value - length) <= 0.01 * length + 2 * max(spacing)
    gap = ids.copy()
    gap[(ids == 1) & (cv2.dilate((ids == 2).astype(np.uint8), np.ones((3, 3))) > 0)] = 0
    assert abs(canal_length(gap, spacing).value - measured.value) <= 2 * max(spacing)
    assert math.isnan(canal_length(np.where(ids == 2, 0, ids), spacing).value)  # one lip
    # A hole of background across the canal, 6 pixels wide, as a prediction leaves one: the
    # hole goes to the nearer lip on each side and the canal runs on across it.
    middle = np.argwhere(
        (ids == 1) & (cv2.dilate((ids == 2).astype(np.uint8), np.ones((3, 3))) > 0)
    )
    centre = middle[len(middle) // 2]
    holed = ids.copy()
    holed[np.hypot(*(np.indices(ids.shape) - centre[:, None, None])) <= 3] = 0
    assert ndimage.label(holed > 0)[1] == 1  # still one cervix, the hole inside it
    assert abs(canal_length(holed, spacing).value - measured.value) <= 3 * max(spacing)
