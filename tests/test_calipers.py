from pathlib import Path

import cv2
import numpy as np
import pytest

from cervixnet.data.calipers import CaliperSpec, detect_calipers, remove_calipers

YELLOW, GREEN = (0, 255, 255), (0, 255, 0)  # BGR


def _clean_gray(height: int = 120, width: int = 160) -> np.ndarray:
    """A smooth, mildly textured gray 'tissue' image."""
    yy, xx = np.mgrid[:height, :width]
    rng = np.random.default_rng(0)
    base = 60 + 80 * xx / width + 40 * np.sin(yy / 15.0) + rng.normal(0, 2, (height, width))
    return np.clip(base, 0, 255).astype(np.uint8)


def _with_marks(gray: np.ndarray) -> np.ndarray:
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    for centre, colour in (((40, 50), YELLOW), ((110, 70), YELLOW), ((80, 30), GREEN)):
        x, y = centre
        cv2.line(image, (x - 5, y), (x + 5, y), colour, 1, cv2.LINE_AA)
        cv2.line(image, (x, y - 5), (x, y + 5), colour, 1, cv2.LINE_AA)
    for x in range(45, 106, 6):  # a dotted yellow measuring line
        cv2.circle(image, (x, 50 + (x - 40) * 20 // 70), 1, YELLOW, -1)
    return image


def test_marks_are_found_and_filled_close_to_the_tissue_underneath():
    clean = _clean_gray()
    marked = _with_marks(clean)
    original = marked.copy()
    result = remove_calipers(marked)
    np.testing.assert_array_equal(marked, original)  # the input is left alone
    coloured = np.any(marked != cv2.cvtColor(clean, cv2.COLOR_GRAY2BGR), axis=2)
    assert result.marks[coloured].all()  # every drawn pixel, antialiased rim included
    assert result.filled_pixels == int(result.marks.sum()) > coloured.sum()
    assert result.image.shape == clean.shape and result.image.dtype == np.uint8
    error = np.abs(result.image.astype(int) - clean.astype(int))
    assert error[result.marks > 0].mean() < 6.0
    # Without inpainting, the marks stand far above the tissue.
    plain = cv2.cvtColor(marked, cv2.COLOR_BGR2GRAY).astype(int)
    assert np.abs(plain - clean)[coloured].mean() > 40
    # Pixels away from the marks are the plain grayscale conversion, untouched.
    far = cv2.dilate(result.marks, np.ones((9, 9), np.uint8)) == 0
    np.testing.assert_array_equal(result.image[far], plain[far])


def test_image_without_marks_is_only_converted():
    clean = _clean_gray()
    colour = cv2.cvtColor(clean, cv2.COLOR_GRAY2BGR)
    result = remove_calipers(colour)
    assert result.filled_pixels == 0
    np.testing.assert_array_equal(result.image, clean)


@pytest.mark.parametrize("shape", [(120, 160), (120, 160, 1)])
def test_grayscale_image_is_returned_unchanged(shape):
    gray = _clean_gray().reshape(shape)
    result = remove_calipers(gray)
    assert result.filled_pixels == 0
    np.testing.assert_array_equal(result.image, gray.reshape(120, 160))


def test_bgra_and_16_bit_images():
    marked = _with_marks(_clean_gray())
    bgra = cv2.cvtColor(marked, cv2.COLOR_BGR2BGRA)
    assert remove_calipers(bgra).filled_pixels == remove_calipers(marked).filled_pixels
    deep = marked.astype(np.uint16) * 257
    result = remove_calipers(deep)
    assert result.image.dtype == np.uint16
    np.testing.assert_array_equal(result.marks, remove_calipers(marked).marks)
    clean16 = _clean_gray().astype(np.int64) * 257
    assert np.abs(result.image.astype(np.int64) - clean16)[result.marks > 0].mean() < 6 * 257


def test_thresholds_choose_the_colours():
    marked = _with_marks(_clean_gray())
    yellow_only = CaliperSpec(green_hue=(179, 179), grow_pixels=0)
    green_pixels = np.all(marked == GREEN, axis=2)
    yellow_pixels = np.all(marked == YELLOW, axis=2)
    marks = detect_calipers(marked, yellow_only)
    assert marks[yellow_pixels].all() and not marks[green_pixels].any()


def test_synthetic_calipers_are_filled_close_to_the_clean_image(tmp_path: Path):
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.synthetic import SyntheticSpec, generate

    generate(tmp_path, SyntheticSpec(n_images=12, n_preterm=2, seed=4, write_clean=True))
    checked = 0
    for record in read_manifest(tmp_path).records:
        image = cv2.imread(str(record.image), cv2.IMREAD_UNCHANGED)
        clean = cv2.imread(str(tmp_path / record.extra["clean_image"]), cv2.IMREAD_UNCHANGED)
        pure = np.all(image == YELLOW, axis=2) | np.all(image == GREEN, axis=2)
        result = remove_calipers(image)
        assert result.marks[pure].all()
        # Away from the marks the result is the clean image exactly.
        np.testing.assert_array_equal(result.image[result.marks == 0], clean[result.marks == 0])
        if not pure.any():
            continue
        # On the marks: within speckle of the clean image, far closer than the marks were.
        filled_error = np.abs(result.image.astype(int) - clean)[pure].mean()
        plain = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(int)
        marked_error = np.abs(plain - clean)[pure].mean()
        assert filled_error < 25 and filled_error < 0.6 * marked_error
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"yellow_hue": (40, 20)}, "yellow_hue"),
        ({"green_hue": (45, 200)}, "green_hue"),
        ({"min_saturation": 300}, "min_saturation=300"),
        ({"grow_pixels": -1}, "grow_pixels=-1"),
        ({"inpaint_radius": 0}, "inpaint_radius=0"),
    ],
)
def test_bad_spec(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CaliperSpec(**kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="dtype=float32"):
        remove_calipers(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape=\(4, 4, 2\)"):
        remove_calipers(np.zeros((4, 4, 2), np.uint8))
