"""Caliper removal: find the yellow and green marks burnt into an ultrasound image, fill them.

Clinicians measure the cervix on the scanner, which burns coloured crosses and dotted lines
into the exported image. The anatomy is gray (R = G = B), the marks are saturated colour, so
they are found by colour thresholds in HSV, grown by a pixel or two to catch their
antialiased rims, and filled with OpenCV's Telea inpainting (``cv2.INPAINT_TELEA``). The result
is the grayscale image the network sees, without the marks.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class CaliperSpec:
    """Thresholds and sizes for caliper removal.

    Hues are OpenCV's (0-179: yellow is about 30, green about 60); saturation and value are
    0-255 on the image scaled to 8 bits.

    Attributes:
        yellow_hue: inclusive hue range taken as yellow. Default ``(20, 40)``.
        green_hue: inclusive hue range taken as green. Default ``(45, 85)``.
        min_saturation: a mark pixel is at least this saturated; gray anatomy has 0.
        min_value: a mark pixel is at least this bright.
        grow_pixels: the detected marks are dilated by this radius before filling.
        inpaint_radius: neighbourhood radius of Telea's method, in pixels.
    """

    yellow_hue: tuple[int, int] = (20, 40)
    green_hue: tuple[int, int] = (45, 85)
    min_saturation: int = 100
    min_value: int = 100
    grow_pixels: int = 1
    inpaint_radius: float = 3.0

    def __post_init__(self) -> None:
        for name in ("yellow_hue", "green_hue"):
            low, high = getattr(self, name)
            if not 0 <= low <= high <= 179:
                raise ValueError(
                    f"`{name}` must be (low, high) with 0 <= low <= high <= 179. "
                    f"Received: {name}={getattr(self, name)!r}"
                )
        for name in ("min_saturation", "min_value"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(
                    f"`{name}` must be in [0, 255]. Received: {name}={getattr(self, name)!r}"
                )
        if self.grow_pixels < 0:
            raise ValueError(
                f"`grow_pixels` must be >= 0. Received: grow_pixels={self.grow_pixels}"
            )
        if self.inpaint_radius <= 0:
            raise ValueError(
                f"`inpaint_radius` must be > 0. Received: inpaint_radius={self.inpaint_radius}"
            )


@dataclasses.dataclass(frozen=True)
class CaliperResult:
    """A cleaned image and what was done to it.

    Attributes:
        image: grayscale ``(H, W)``, the input's dtype (uint8 or uint16), marks filled.
        marks: ``(H, W)`` uint8 in {0, 1}: the filled pixels (detected marks, grown).
        filled_pixels: ``marks.sum()``, for the data report.
    """

    image: np.ndarray
    marks: np.ndarray
    filled_pixels: int


def detect_calipers(image: np.ndarray, spec: CaliperSpec | None = None) -> np.ndarray:
    """Yellow and green mark pixels of a BGR(A) image, grown by ``spec.grow_pixels``.

    Args:
        image: ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA, uint8 or uint16 (OpenCV's channel
            order, as ``cv2.imread`` returns); a grayscale ``(H, W)`` or ``(H, W, 1)`` image
            has no colour marks and gives an empty result.
        spec: thresholds; defaults to ``CaliperSpec()``.

    Returns:
        ``(H, W)`` uint8 mask in {0, 1}.
    """
    spec = spec or CaliperSpec()
    _check_image(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return np.zeros(image.shape[:2], np.uint8)
    bgr = _to_uint8(image[..., :3])
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    marks = np.zeros(image.shape[:2], np.uint8)
    for low, high in (spec.yellow_hue, spec.green_hue):
        lower = np.array([low, spec.min_saturation, spec.min_value], np.uint8)
        upper = np.array([high, 255, 255], np.uint8)
        marks |= cv2.inRange(hsv, lower, upper)
    if spec.grow_pixels > 0 and marks.any():
        size = 2 * spec.grow_pixels + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        marks = cv2.dilate(marks, kernel)
    return (marks > 0).astype(np.uint8)


def remove_calipers(image: np.ndarray, spec: CaliperSpec | None = None) -> CaliperResult:
    """Converts to grayscale and fills the yellow and green marks with Telea inpainting.

    An image without marks comes back as its plain grayscale conversion (nothing filled); a
    grayscale image comes back unchanged. The input array is never modified.

    Args:
        image: as for :func:`detect_calipers`.
        spec: thresholds and sizes; defaults to ``CaliperSpec()``.
    """
    spec = spec or CaliperSpec()
    marks = detect_calipers(image, spec)
    gray = _to_gray(image)
    filled = int(marks.sum())
    if filled:
        gray = cv2.inpaint(gray, marks, spec.inpaint_radius, cv2.INPAINT_TELEA)
    return CaliperResult(image=gray, marks=marks, filled_pixels=filled)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16):
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"Expected a uint8 or uint16 image array. Received: dtype={dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(
            "Expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). "
            f"Received: shape={image.shape}"
        )


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image.copy()
    if image.shape[2] == 1:
        return image[..., 0].copy()
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2GRAY)
