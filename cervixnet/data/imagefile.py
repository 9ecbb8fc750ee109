"""Reading image and mask files, with one clear reason for each file that cannot be used.

Every command that reads pixels (``data validate``, ``data prepare``, ``train``, ``evaluate``,
``predict``, ``gradcam``) goes through :func:`read_image`, so a broken file gets the same
sentence everywhere:

======================================  =============================================
file                                    what happens
======================================  =============================================
missing, or a folder                    error: ``file not found`` / ``a folder``
0 bytes                                 error: ``empty file (0 bytes)``
PNG or JPEG cut short                   error: ``truncated PNG`` / ``truncated JPEG``
not an image (text, CSV, ...)           error: ``cannot be decoded as an image``
float or 32-bit pixels                  error: ``... pixels are not supported``
smaller than 8 x 8 pixels (1 x 1)       error: ``too small``
gray + alpha (2 channels)               accepted: the alpha channel is dropped
colour + alpha (4 channels)             accepted: the alpha channel is dropped
16-bit                                  accepted: kept 16-bit, scaled by 65535
mask with values other than 0, 1, 255   error: ``not a binary mask``
class-id mask with ids > its classes    error: ``class ids beyond the ... classes``
======================================  =============================================

The bytes are read with NumPy and decoded in memory by OpenCV, so that paths with spaces and
non-ASCII characters work on every platform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cervixnet.errors import DataError

# Below this many pixels per side a file is a placeholder or a broken export, not a scan.
MIN_SIDE = 8
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk type and its CRC: the last 8 bytes of a PNG
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_TAIL = 1024  # trailing bytes searched for the end marker (some writers pad after it)
_BINARY_VALUES = (0, 1, 255, 65535)


class ImageFileError(DataError):
    """A file that cannot be used as an image or mask.

    Attributes:
        path: the file.
        reason: what is wrong with it, without the path (for messages that name the file
            their own way, such as a manifest row).
    """

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def read_image(path: str | Path) -> np.ndarray:
    """Decodes an image file as stored (any OpenCV format, bit depth and channel count).

    Returns:
        uint8 or uint16 array ``(H, W)`` or ``(H, W, C)``, as OpenCV decodes it (BGR order).

    Raises:
        ImageFileError: the file is missing, a folder, empty, truncated, not an image, has
            pixels other than 8- or 16-bit integers, or is smaller than ``MIN_SIDE`` pixels.
    """
    import cv2

    path = Path(path)
    if path.is_dir():
        raise ImageFileError(path, "a folder, not an image file")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageFileError(path, "file not found") from None
    except OSError as error:
        raise ImageFileError(path, f"cannot be read ({error.strerror})") from None
    if data.size == 0:
        raise ImageFileError(path, "empty file (0 bytes), not an image")
    truncated = _truncation(data[:8].tobytes(), data[-_TAIL:].tobytes())
    if truncated:
        kind, marker = truncated
        raise ImageFileError(
            path, f"truncated {kind}: {data.size} bytes without the {marker} that ends every {kind}"
        )
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise ImageFileError(
            path, "cannot be decoded as an image (expected PNG, JPEG, BMP or TIFF)"
        )
    problem = pixel_problem(image)
    if problem:
        raise ImageFileError(path, problem)
    return image


def pixel_problem(image: np.ndarray) -> str | None:
    """Why decoded pixels cannot be used (pixel type, channels, size), or ``None``."""
    if image.dtype not in (np.uint8, np.uint16):
        return f"{image.dtype} pixels are not supported; expected 8- or 16-bit integer images"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        return f"an image of shape {image.shape} is not supported; expected 1 to 4 channels"
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        return (
            f"{width}x{height} pixels is too small for an ultrasound image "
            f"(at least {MIN_SIDE}x{MIN_SIDE})"
        )
    return None


def to_gray(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` grayscale of a decoded image: alpha dropped, colour (BGR) converted."""
    import cv2

    if image.ndim == 2:
        return image
    if image.shape[2] <= 2:  # gray, or gray + alpha
        return np.ascontiguousarray(image[..., 0])
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2GRAY)


def mask_values(stored: np.ndarray) -> np.ndarray:
    """``(H, W)`` of a decoded mask file: the largest colour channel, alpha left out."""
    if stored.ndim == 2:
        return stored
    colour = stored[..., :1] if stored.shape[2] <= 2 else stored[..., :3]
    return colour.max(axis=2)


def mask_problem(values: np.ndarray, classes: int = 1) -> str | None:
    """Why a mask (from :func:`mask_values`) does not fit ``classes`` classes, or ``None``.

    One class: a mask holds 0 (background) and 1 or 255 (cervix). Any other value means the
    file is not a mask (an image given as the mask, a JPEG-compressed or antialiased mask),
    and counting every non-zero pixel as cervix would train on a wrong outline. Several
    classes: a mask holds class ids 0 (background) to ``classes``.
    """
    found = np.unique(values)
    if classes > 1:
        other = found[found > classes]
        if other.size == 0:
            return None
        shown = ", ".join(str(v) for v in other[:3].tolist())
        return (
            f"class ids beyond the {classes} classes of data.classes: {other.size} value(s) "
            f"above {classes} (e.g. {shown}); a class-id mask holds 0 (background) to {classes}"
        )
    other = found[~np.isin(found, _BINARY_VALUES)]
    if other.size == 0:
        return None
    shown = ", ".join(str(v) for v in other[:3].tolist())
    hint = (
        "; for a mask of class ids, name its classes in data.classes" if other.max() <= 16 else ""
    )
    return (
        f"not a binary mask: {other.size} value(s) other than 0, 1 and 255 (e.g. {shown}); "
        f"a mask marks the cervix with 1 or 255 and the rest with 0{hint}"
    )


def _truncation(head: bytes, tail: bytes) -> tuple[str, str] | None:
    """``(format, missing end marker)`` of a PNG or JPEG file cut short, else ``None``."""
    if head.startswith(_PNG_SIGNATURE) and _PNG_END not in tail:
        return "PNG", "IEND chunk"
    if head.startswith(_JPEG_START) and _JPEG_END not in tail:
        return "JPEG", "end-of-image marker"
    return None
