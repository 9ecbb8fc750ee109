"""Fitting an image into the network's input size without squashing it, and back.

NumPy and OpenCV only (no Keras, no TensorFlow).

A scan of height x width ``(sh, sw)`` goes into a network input of ``(th, tw)``. Mode
``"letterbox"`` scales it by one factor, as large as fits, and centres it on a zero background,
so a round structure stays round; mode ``"stretch"`` resizes each axis to fill the target.
:func:`unfit_probabilities` takes a predicted mask back to the scan's own size, so masks are
scored at each scan's size::

    x = fit_image(image, (128, 192))                      # bilinear/area content, zero padding
    y = fit_image(mask, (128, 192), interpolation="nearest")
    probability = unfit_probabilities(predicted[..., 0], image.shape[:2])  # (sh, sw) float32
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["Letterbox", "fit_image", "letterbox_geometry", "unfit_probabilities"]

_MODES = ("letterbox", "stretch")
_INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST_EXACT,
}
# dtypes that cv2.resize takes with every interpolation above; others go through float64.
_CV2_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


@dataclass(frozen=True)
class Letterbox:
    """Where a source image lies inside the target once fitted.

    The resized content occupies rows ``top : top + content_size[0]`` and columns
    ``left : left + content_size[1]`` of the target; the rest is padding.

    Attributes:
        source_size: ``(height, width)`` of the source image, in pixels.
        target_size: ``(height, width)`` of the network input, in pixels.
        scale: Target pixels per source pixel (``"stretch"``: the geometric mean of the two
            axes' factors, ``sqrt(th / sh * tw / sw)``).
        top: Rows of padding above the content.
        left: Columns of padding left of the content.
        content_size: ``(height, width)`` of the resized content inside the target.
    """

    source_size: tuple[int, int]
    target_size: tuple[int, int]
    scale: float
    top: int
    left: int
    content_size: tuple[int, int]


def _size(name: str, value: Any) -> tuple[int, int]:
    """Returns ``value`` as ``(height, width)`` of positive ints, or raises ValueError."""
    try:
        height, width = value
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be (height, width). Received: {name}={value!r}") from None
    for side in (height, width):
        if isinstance(side, bool) or not isinstance(side, int | np.integer) or side < 1:
            raise ValueError(f"`{name}` must hold two integers >= 1. Received: {name}={value!r}")
    return int(height), int(width)


def letterbox_geometry(
    source_size: tuple[int, int], target_size: tuple[int, int], mode: str = "letterbox"
) -> Letterbox:
    """Computes where a ``source_size`` image goes inside ``target_size``.

    Mode ``"letterbox"``: ``scale = min(th / sh, tw / sw)``; the content is
    ``(max(1, round(sh * scale)), max(1, round(sw * scale)))``, at most the target, centred
    with ``top = (th - ch) // 2`` and ``left = (tw - cw) // 2`` (an odd remainder puts the extra
    pixel below or right). Mode ``"stretch"``: the content fills the target (``top = left = 0``)
    and ``scale`` is the geometric mean ``sqrt(th / sh * tw / sw)``.

    Args:
        source_size: ``(height, width)`` of the source, both >= 1.
        target_size: ``(height, width)`` of the network input, both >= 1.
        mode: ``"letterbox"`` or ``"stretch"``. Defaults to "letterbox".

    Returns:
        A :class:`Letterbox`.

    Raises:
        ValueError: On a size that is not two integers >= 1, or an unknown mode.
    """
    sh, sw = _size("source_size", source_size)
    th, tw = _size("target_size", target_size)
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}. Received: mode={mode!r}")
    if mode == "stretch":
        scale = math.sqrt(th / sh * tw / sw)
        return Letterbox((sh, sw), (th, tw), scale, 0, 0, (th, tw))
    scale = min(th / sh, tw / sw)
    ch = min(th, max(1, round(sh * scale)))
    cw = min(tw, max(1, round(sw * scale)))
    return Letterbox((sh, sw), (th, tw), scale, (th - ch) // 2, (tw - cw) // 2, (ch, cw))


def _resize(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """``cv2.resize`` to ``size`` (height, width) for any dtype and channel count.

    Keeps the dtype and the channel axis (cv2 drops a trailing axis of 1). dtypes cv2 lacks go
    through float64 and are rounded back; INTER_AREA takes at most 4 channels per call.
    """
    height, width = size
    work = np.ascontiguousarray(image if image.dtype in _CV2_DTYPES else image.astype(np.float64))
    if work.ndim == 3 and work.shape[2] > 4:
        resized = np.stack(
            [_resize(work[..., c], size, interpolation) for c in range(work.shape[2])], axis=-1
        )
    else:
        resized = cv2.resize(work, (width, height), interpolation=interpolation)
        resized = resized.reshape((height, width, *image.shape[2:]))
    if work.dtype != image.dtype and image.dtype.kind in "biu":
        resized = np.rint(resized)
    return resized.astype(image.dtype, copy=False)


def fit_image(
    image: np.ndarray,
    target_size: tuple[int, int],
    mode: str = "letterbox",
    interpolation: str = "auto",
) -> np.ndarray:
    """Resizes an image into ``target_size`` as :func:`letterbox_geometry` says; pads with 0.

    Args:
        image: Shape ``(H, W)`` or ``(H, W, C)``, any dtype.
        target_size: ``(height, width)`` of the network input, both >= 1.
        mode: ``"letterbox"`` or ``"stretch"``. Defaults to "letterbox".
        interpolation: ``"area"`` (cv2.INTER_AREA), ``"bilinear"`` (cv2.INTER_LINEAR),
            ``"nearest"`` (cv2.INTER_NEAREST_EXACT, pixel-centred; use it for masks, it keeps
            their values) or ``"auto"`` (area when ``scale < 1``, bilinear otherwise).
            Defaults to "auto".

    Returns:
        Shape ``(th, tw)`` or ``(th, tw, C)`` like the input, same dtype, zeros outside the
        content box.

    Raises:
        ValueError: On an image that is not 2-D or 3-D, a bad size, mode or interpolation.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"`image` must have shape (H, W) or (H, W, C). Received: image.shape={image.shape}"
        )
    if interpolation not in (*_INTERPOLATIONS, "auto"):
        raise ValueError(
            f"`interpolation` must be one of {(*_INTERPOLATIONS, 'auto')}. "
            f"Received: interpolation={interpolation!r}"
        )
    box = letterbox_geometry(image.shape[:2], target_size, mode)
    if interpolation == "auto":
        interpolation = "area" if box.scale < 1 else "bilinear"
    (ch, cw), (top, left) = box.content_size, (box.top, box.left)
    fitted = np.zeros((*box.target_size, *image.shape[2:]), dtype=image.dtype)
    fitted[top : top + ch, left : left + cw] = _resize(
        image, box.content_size, _INTERPOLATIONS[interpolation]
    )
    return fitted


def unfit_probabilities(
    probabilities: np.ndarray, source_size: tuple[int, int], mode: str = "letterbox"
) -> np.ndarray:
    """Takes a mask predicted at the target size back to the source size.

    Crops the content box that :func:`fit_image` filled (the target size is
    ``probabilities.shape``) and resizes it bilinearly (cv2.INTER_LINEAR) to ``source_size``.

    Args:
        probabilities: Mask probabilities at the network input size, shape ``(th, tw)``, or
            ``(th, tw, C)`` with one channel per class (each resized alike).
        source_size: ``(height, width)`` of the source image, both >= 1.
        mode: The mode the image was fitted with. Defaults to "letterbox".

    Returns:
        float32 probabilities, shape ``(sh, sw)`` (``(sh, sw, C)``).

    Raises:
        ValueError: On probabilities that are not 2-D (or 3-D), a bad size or mode.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if not (probabilities.ndim == 2 or (probabilities.ndim == 3 and probabilities.shape[2] > 1)):
        raise ValueError(
            "`probabilities` must have shape (height, width), or (height, width, channels) "
            f"with 2 or more channels. Received: probabilities.shape={probabilities.shape}"
        )
    box = letterbox_geometry(source_size, probabilities.shape[:2], mode)
    (ch, cw), (sh, sw) = box.content_size, box.source_size
    content = np.ascontiguousarray(probabilities[box.top : box.top + ch, box.left : box.left + cw])
    return cv2.resize(content, (sw, sh), interpolation=cv2.INTER_LINEAR)
