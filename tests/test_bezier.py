"""Tests of cervixnet.data.bezier: the two readings of four control points, masks, text form."""

import re

import cv2
import numpy as np
import pytest

from cervixnet.data.bezier import (
    MODES,
    format_points,
    outline,
    parse_points,
    rasterize,
    smooth_segments,
)

POINTS = np.array([[120.0, 40.0], [60.0, 90.0], [20.0, 50.0], [70.0, 10.0]])


def test_smooth_outline_passes_through_the_four_points():
    curve = outline(POINTS, mode="smooth", samples=50)
    assert curve.shape == (200, 2)
    np.testing.assert_allclose(curve[::50], POINTS)


def test_smooth_outline_is_closed_and_continuous():
    curve = outline(POINTS, samples=200)
    steps = np.linalg.norm(np.diff(np.vstack([curve, curve[:1]]), axis=0), axis=1)
    assert steps.max() < 2.0  # no jumps, including the closing edge back to p0


def test_smooth_segments_follow_catmull_rom_tangents():
    segments = smooth_segments(POINTS)
    assert segments.shape == (4, 4, 2)
    # Segment 0 runs p0 -> p1 with inner control points p0 + (p1 - p3) / 6, p1 - (p2 - p0) / 6.
    p0, p1, p2, p3 = POINTS
    np.testing.assert_allclose(segments[0], [p0, p0 + (p1 - p3) / 6, p1 - (p2 - p0) / 6, p1])


def test_tension_one_gives_the_quadrilateral():
    curve = outline(POINTS, samples=10, tension=1.0)
    # Every sample lies on the straight edge between consecutive points.
    for i in range(4):
        a, b = POINTS[i], POINTS[(i + 1) % 4]
        for point in curve[i * 10 : (i + 1) * 10]:
            cross = (b - a)[0] * (point - a)[1] - (b - a)[1] * (point - a)[0]
            assert abs(cross) < 1e-9


def test_chord_outline_starts_at_p0_and_ends_at_p3():
    curve = outline(POINTS, mode="chord", samples=40)
    assert curve.shape == (41, 2)
    np.testing.assert_allclose(curve[0], POINTS[0])
    np.testing.assert_allclose(curve[-1], POINTS[3])


def test_chord_outline_stays_inside_the_convex_hull():
    hull = cv2.convexHull(POINTS.astype(np.float32))
    for x, y in outline(POINTS, mode="chord", samples=100):
        assert cv2.pointPolygonTest(hull, (float(x), float(y)), True) >= -1e-3


def test_rasterize_square_with_straight_edges():
    square = [[10, 10], [60, 10], [60, 60], [10, 60]]
    mask = rasterize(square, 80, 90, tension=1.0)
    assert mask.shape == (80, 90) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    # 50 x 50 pixel-centre area; the boundary rows/columns add at most 101 pixels.
    assert 2500 <= mask.sum() <= 2601
    assert mask[35, 35] == 1 and mask[5, 5] == 0


def test_rasterize_smooth_diamond_matches_hand_computed_area():
    # Diamond with half-diagonal a around (100, 100). Its first smooth segment, from (a, 0) to
    # (0, a) relative to the centre, has Bézier points (a, 0), (a, a/3), (a/3, a), (0, a)
    # (tangents (p1 - p3) / 2 and (p2 - p0) / 2, divided by 3). By Green's theorem
    # 1/2 * integral of (x y' - y x') dt over that segment is 41/60 a^2, so by symmetry the
    # enclosed area is 4 * 41/60 a^2 = 41/15 a^2. OpenCV also fills the pixels the boundary
    # runs through (the outline grown by about half a pixel), which adds at most half the
    # perimeter; the curve lies inside the circle of radius a, so that is below pi * a.
    a = 40.0
    diamond = np.array([[100 + a, 100], [100, 100 + a], [100 - a, 100], [100, 100 - a]])
    mask = rasterize(diamond, 200, 200)
    expected = 41 / 15 * a**2
    assert 0.99 * expected <= mask.sum() <= 1.01 * (expected + np.pi * a)


def test_rasterize_chord_area_below_smooth_area():
    smooth = rasterize(POINTS, 128, 160, mode="smooth")
    chord = rasterize(POINTS, 128, 160, mode="chord")
    assert 0 < chord.sum() < smooth.sum()


def test_rasterize_sub_pixel_shift_moves_the_mask():
    square = np.array([[10, 10], [30, 10], [30, 30], [10, 30]], dtype=float)
    left = rasterize(square, 40, 40, tension=1.0)
    right = rasterize(square + np.array([0.6, 0.0]), 40, 40, tension=1.0)
    assert not np.array_equal(left, right)


@pytest.mark.parametrize(
    "points",
    [
        POINTS,
        [[0.0, 0.0], [10.25, -3.5], [1e3, 2e3], [5.0, 5.0]],
        [[-0.04, 0.04], [1.05, 2.95], [7, 8], [9, 10]],
    ],
)
def test_parse_and_format_round_trip(points):
    text = format_points(points)
    parsed = parse_points(text)
    np.testing.assert_allclose(parsed, np.round(np.asarray(points, dtype=float), 1), atol=1e-9)
    assert format_points(parsed) == text


def test_format_points_text():
    assert format_points(POINTS) == "120.0,40.0 60.0,90.0 20.0,50.0 70.0,10.0"
    assert format_points([[-0.01, 0], [1, 2], [3, 4], [5, 6]]).startswith("0.0,0.0 ")


def test_parse_points_accepts_extra_spaces():
    np.testing.assert_allclose(
        parse_points("  1,2   3,4 5,6\t7,8 "), [[1, 2], [3, 4], [5, 6], [7, 8]]
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1,2 3,4 5,6",
        "1,2 3,4 5,6 7,8 9,10",
        "1,2 3,4 5,6 7",
        "1,2 3,4 5,6 7,8,9",
        "1,2 3,4 5,6 a,8",
        "1;2 3;4 5;6 7;8",
        "1,2 3,4 5,6 nan,8",
        "1,2 3,4 5,6 inf,8",
        "1, 2 3,4 5,6 7,8",
    ],
)
def test_parse_points_rejects_malformed_text(text):
    with pytest.raises(ValueError, match=re.escape(f"Received: {text!r}")):
        parse_points(text)


def test_parse_points_rejects_non_text():
    with pytest.raises(ValueError, match="Received"):
        parse_points(None)


@pytest.mark.parametrize("mode", ["x", "Smooth", "bezier", ""])
def test_bad_mode_raises(mode):
    message = rf"\['smooth', 'chord'\]. Received: mode={mode!r}"
    with pytest.raises(ValueError, match=message):
        outline(POINTS, mode=mode)
    with pytest.raises(ValueError, match=message):
        rasterize(POINTS, 10, 10, mode=mode)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": np.zeros((3, 2))}, "shape"),
        ({"points": np.zeros((4, 3))}, "shape"),
        ({"points": [[0, 0], [1, 1], [2, np.nan], [3, 3]]}, "finite"),
        ({"samples": 1}, "samples"),
        ({"samples": 2.5}, "samples"),
        ({"tension": 1.5}, "tension"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    arguments = {"points": POINTS, **kwargs}
    with pytest.raises(ValueError, match=message):
        outline(**arguments)


@pytest.mark.parametrize(("height", "width"), [(0, 10), (10, -1), (2.5, 10)])
def test_rasterize_bad_size_raises(height, width):
    with pytest.raises(ValueError, match="Received: height="):
        rasterize(POINTS, height, width)


def test_modes_constant():
    assert MODES == ("smooth", "chord")
