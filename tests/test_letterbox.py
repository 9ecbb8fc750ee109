"""Tests of cervixnet.data.letterbox: geometry by hand, aspect, padding, dtypes, round trip."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from cervixnet.data.letterbox import (
    Letterbox,
    fit_image,
    letterbox_geometry,
    unfit_probabilities,
)


def _ellipse(size: tuple[int, int] = (173, 256)) -> np.ndarray:
    """A uint8 {0, 255} mask holding one tilted filled ellipse."""
    mask = np.zeros(size, dtype=np.uint8)
    centre = (size[1] // 2, size[0] // 2)
    cv2.ellipse(mask, centre, (size[1] // 3, size[0] // 3), 20, 0, 360, 255, thickness=-1)
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


# letterbox_geometry


@pytest.mark.parametrize(
    ("source", "target", "scale", "top", "left", "content"),
    [
        # 128/173 = 0.7399 < 192/256 = 0.75; width 256 * 0.7399 = 189.4 -> 189; (192-189)//2 = 1.
        ((173, 256), (128, 192), 128 / 173, 0, 1, (128, 189)),
        # Tall into wide: 64/200 = 0.32; width 32; (128-32)//2 = 48 columns each side.
        ((200, 100), (64, 128), 0.32, 0, 48, (64, 32)),
        # Wide into square: 128/300; height 100 * 0.4267 = 42.7 -> 43; (128-43)//2 = 42.
        ((100, 300), (128, 128), 128 / 300, 42, 0, (43, 128)),
        # Equal aspect: no padding.
        ((100, 150), (64, 96), 0.64, 0, 0, (64, 96)),
        ((64, 64), (64, 64), 1.0, 0, 0, (64, 64)),
        # Enlarging: min(6.4, 3.2) = 3.2; height 32; (64-32)//2 = 16.
        ((10, 20), (64, 64), 3.2, 16, 0, (32, 64)),
        # A sliver keeps at least one row: 1 * 0.032 rounds to 0 -> 1; (32-1)//2 = 15.
        ((1, 1000), (32, 32), 0.032, 15, 0, (1, 32)),
    ],
)
def test_letterbox_geometry_by_hand(source, target, scale, top, left, content) -> None:
    box = letterbox_geometry(source, target)
    assert box == Letterbox(source, target, pytest.approx(scale, rel=1e-12), top, left, content)
    # The content fits and is centred to within one pixel.
    (th, tw), (ch, cw) = target, box.content_size
    assert 0 <= th - (box.top + ch) - box.top <= 1
    assert 0 <= tw - (box.left + cw) - box.left <= 1


@pytest.mark.parametrize(
    ("source", "target"),
    [((173, 256), (128, 192)), ((200, 100), (64, 128)), ((10, 20), (64, 64))],
)
def test_stretch_geometry_fills_the_target(source, target) -> None:
    box = letterbox_geometry(source, target, mode="stretch")
    scale = math.sqrt(target[0] / source[0] * target[1] / source[1])
    assert box == Letterbox(source, target, pytest.approx(scale, rel=1e-12), 0, 0, target)


@pytest.mark.parametrize(
    ("source", "target", "mode", "message"),
    [
        ((0, 10), (10, 10), "letterbox", r"source_size=\(0, 10\)"),
        ((10, -1), (10, 10), "letterbox", r"source_size=\(10, -1\)"),
        ((10.5, 10), (10, 10), "letterbox", r"source_size=\(10\.5, 10\)"),
        ((True, 10), (10, 10), "letterbox", r"source_size=\(True, 10\)"),
        ((10, 10), (10,), "letterbox", r"target_size=\(10,\)"),
        ((10, 10), 10, "stretch", "target_size=10"),
        ((10, 10), (10, 10), "crop", "mode='crop'"),
    ],
)
def test_letterbox_geometry_rejects_bad_arguments(source, target, mode, message) -> None:
    with pytest.raises(ValueError, match=rf"{message}$"):
        letterbox_geometry(source, target, mode)


# fit_image


def test_fit_image_keeps_a_circle_round_where_stretch_would_not() -> None:
    image = np.zeros((200, 100), dtype=np.uint8)
    cv2.circle(image, (50, 100), 45, 255, thickness=-1)
    for mode, aspect in [("letterbox", 1.0), ("stretch", 4.0)]:  # stretch: x 1.28 vs y 0.32
        fitted = fit_image(image, (64, 128), mode=mode)
        rows, columns = np.nonzero(fitted > 127)
        height, width = np.ptp(rows) + 1, np.ptp(columns) + 1
        assert abs(width - aspect * height) <= 1 * aspect, (mode, height, width)
    # Letterboxed, the circle sits in the centred content box (columns 48 to 79).
    rows, columns = np.nonzero(fit_image(image, (64, 128)) > 127)
    assert columns.min() >= 48 and columns.max() <= 79
    assert abs((columns.min() + columns.max()) / 2 - 63.5) <= 1


@pytest.mark.parametrize(
    ("source", "target", "box"),
    [
        ((200, 100), (64, 128), (slice(0, 64), slice(48, 80))),  # padding left and right
        ((100, 300), (128, 128), (slice(42, 85), slice(0, 128))),  # padding above and below
        ((10, 20), (64, 64), (slice(16, 48), slice(0, 64))),  # enlarged
    ],
)
def test_fit_image_pads_with_zeros_around_the_content(source, target, box) -> None:
    fitted = fit_image(np.full(source, 200, dtype=np.uint8), target)
    assert (fitted[box] == 200).all()
    fitted[box] = 0
    assert not fitted.any()


@pytest.mark.parametrize(
    ("shape", "dtype", "interpolation"),
    [
        ((173, 256), np.uint8, "auto"),
        ((173, 256, 1), np.uint8, "area"),
        ((173, 256, 3), np.float32, "bilinear"),
        ((40, 30, 6), np.uint16, "area"),  # cv2's INTER_AREA takes at most 4 channels at once
        ((40, 30, 1), np.float64, "nearest"),
        ((40, 30), np.bool_, "nearest"),
        ((40, 30), np.bool_, "auto"),
        ((40, 30, 2), np.int64, "bilinear"),  # cv2 lacks int64
        ((40, 30, 2), np.int8, "area"),
        ((40, 30), np.float16, "auto"),
    ],
)
def test_fit_image_keeps_dtype_and_channels(shape, dtype, interpolation) -> None:
    channels = shape[2:]
    # Channel c holds the constant c + 1 (True for bool), which any interpolation keeps.
    values = np.arange(1, 1 + (channels[0] if channels else 1)).astype(dtype)
    image = np.broadcast_to(values if channels else values[0], shape).astype(dtype)
    fitted = fit_image(image, (128, 192), interpolation=interpolation)
    assert fitted.dtype == dtype
    assert fitted.shape == (128, 192, *channels)
    box = letterbox_geometry(shape[:2], (128, 192))
    (ch, cw), top, left = box.content_size, box.top, box.left
    content = fitted[top : top + ch, left : left + cw].reshape(ch * cw, -1)
    np.testing.assert_array_equal(content, np.broadcast_to(values, content.shape))
    fitted[top : top + ch, left : left + cw] = 0
    assert not fitted.any()


def test_nearest_keeps_a_mask_binary_where_area_does_not() -> None:
    mask = _ellipse()
    assert set(np.unique(fit_image(mask, (128, 192), interpolation="nearest"))) == {0, 255}
    assert len(np.unique(fit_image(mask, (128, 192), interpolation="area"))) > 2


def test_auto_interpolation_is_area_when_shrinking_and_bilinear_when_enlarging() -> None:
    image = np.random.default_rng(0).random((60, 80)).astype(np.float32)
    for target, expected in [((27, 36), "area"), ((150, 200), "bilinear")]:  # x0.45, x2.5
        auto = fit_image(image, target, interpolation="auto")
        np.testing.assert_array_equal(auto, fit_image(image, target, interpolation=expected))
        other = "bilinear" if expected == "area" else "area"
        assert not np.array_equal(auto, fit_image(image, target, interpolation=other))


def test_fit_image_content_is_the_cv2_resize_of_the_image() -> None:
    image = np.random.default_rng(1).random((173, 256, 3)).astype(np.float32)
    fitted = fit_image(image, (128, 192), interpolation="bilinear")
    expected = cv2.resize(image, (189, 128), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(fitted[:, 1:190], expected)


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros(5), {}, r"image\.shape=\(5,\)"),
        (np.zeros((1, 5, 5, 1)), {}, r"image\.shape=\(1, 5, 5, 1\)"),
        (np.zeros((10, 0)), {}, r"source_size=\(10, 0\)"),
        (np.zeros((10, 10)), {"interpolation": "cubic"}, "interpolation='cubic'"),
        (np.zeros((10, 10)), {"mode": "fill"}, "mode='fill'"),
        (np.zeros((10, 10)), {"target_size": (0, 8)}, r"target_size=\(0, 8\)"),
    ],
)
def test_fit_image_rejects_bad_arguments(image, kwargs, message) -> None:
    kwargs = {"target_size": (8, 8), **kwargs}
    with pytest.raises(ValueError, match=rf"{message}$"):
        fit_image(image, **kwargs)


# unfit_probabilities


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_a_nearest_fitted_mask_comes_back_after_unfit(mode: str) -> None:
    mask = _ellipse((173, 256))
    fitted = fit_image(mask, (128, 192), mode=mode, interpolation="nearest")
    probabilities = unfit_probabilities(fitted / 255.0, (173, 256), mode=mode)
    assert probabilities.shape == (173, 256)
    assert probabilities.dtype == np.float32
    assert _iou(probabilities > 0.5, mask > 0) > 0.97


def test_unfit_probabilities_ignores_the_padding() -> None:
    probabilities = np.ones((64, 128), dtype=np.float32)  # padding: 1.0
    probabilities[:, 48:80] = 0.25  # content box of a 200 x 100 source
    restored = unfit_probabilities(probabilities, (200, 100))
    assert restored.shape == (200, 100)
    np.testing.assert_allclose(restored, 0.25, rtol=0, atol=1e-6)


def test_unfit_probabilities_resizes_bilinearly() -> None:
    probabilities = np.random.default_rng(2).random((128, 192)).astype(np.float32)
    restored = unfit_probabilities(probabilities, (173, 256))
    expected = cv2.resize(probabilities[:, 1:190], (256, 173), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(restored, expected)


@pytest.mark.parametrize(
    ("probabilities", "source", "mode", "message"),
    [
        (np.zeros((8, 8, 1)), (16, 16), "letterbox", r"probabilities\.shape=\(8, 8, 1\)"),
        (np.zeros((8, 8)), (16, 0), "letterbox", r"source_size=\(16, 0\)"),
        (np.zeros((8, 8)), (16, 16), "fill", "mode='fill'"),
    ],
)
def test_unfit_probabilities_rejects_bad_arguments(probabilities, source, mode, message) -> None:
    with pytest.raises(ValueError, match=rf"{message}$"):
        unfit_probabilities(probabilities, source, mode)


def test_dtypes_cv2_lacks_are_resized_as_float64_and_rounded() -> None:
    image = np.random.default_rng(4).integers(0, 1000, (45, 70, 2))
    fitted = fit_image(image, (64, 96), interpolation="bilinear")
    expected = np.rint(fit_image(image.astype(np.float64), (64, 96), interpolation="bilinear"))
    assert fitted.dtype == np.int64
    np.testing.assert_array_equal(fitted, expected)
