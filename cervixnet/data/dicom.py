"""Ultrasound DICOM files: their frames as the scanner showed them, and the physical size of a
pixel, read with pydicom.

Ultrasound files rarely carry ``PixelSpacing``. The size of a pixel sits in the Sequence of
Ultrasound Regions (0018,6011): one item per region of the screen (the tissue image, an ECG
trace, a Doppler strip), each with its box, spatial format, data type and
``PhysicalDeltaX``/``PhysicalDeltaY`` in the units of ``PhysicalUnitsXDirection``/
``PhysicalUnitsYDirection`` (3 = cm). :func:`dicom_spacing` takes the one 2D tissue region
(spatial format 1, data type 1), in mm, and falls back on ``PixelSpacing`` (0028,0030).

Every failure is a :class:`DicomError` naming the file and, where it is about a tag, the tag::

    dataset = read_dicom("scan.dcm")
    spacing = dicom_spacing(dataset, "scan.dcm")  # DicomSpacing(dy, dx, source, box) or None
    frames = dicom_frames(dataset, "scan.dcm")   # [uint8 (H, W) or (H, W, 3) RGB]
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from cervixnet.errors import DataError

__all__ = [
    "DicomError",
    "DicomSpacing",
    "dicom_frames",
    "dicom_spacing",
    "dicom_text",
    "is_dicom",
    "read_dicom",
    "read_dicom_scan",
    "tag_name",
]

SPATIAL_2D = 1  # RegionSpatialFormat (0018,6012): a 2D image
TISSUE = 1  # RegionDataType (0018,6014): tissue
CENTIMETRES = 3  # PhysicalUnitsX/YDirection (0018,6024 / 0018,6026)
REGIONS_TAG = "SequenceOfUltrasoundRegions (0018,6011)"
CHARACTER_SET_TAG = "SpecificCharacterSet (0008,0005)"


class DicomError(DataError):
    """A DICOM file cannot be used; the message names the file and the tag."""


@dataclasses.dataclass(frozen=True)
class DicomSpacing:
    """The physical size of a pixel of a DICOM image.

    Attributes:
        dy, dx: mm per pixel along the rows and the columns.
        source: ``"ultrasound region"`` (0018,6011) or ``"PixelSpacing"`` (0028,0030).
        box: the tissue region ``(x0, y0, x1, y1)`` in pixels, inclusive, clamped to the
            image; None for ``PixelSpacing``.
    """

    dy: float
    dx: float
    source: str
    box: tuple[int, int, int, int] | None = None

    @property
    def spacing(self) -> tuple[float, float]:
        """``(dy, dx)`` in mm, as ``cervixnet.measure`` takes it."""
        return self.dy, self.dx


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file: a ``.dcm`` name, or ``DICM`` after the 128-byte
    preamble."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_dicom_scan(path: str | Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The first frame of a DICOM file as OpenCV holds an image (uint8 gray, or BGR), and its
    pixel spacing ``(dy, dx)`` in mm (None when the file gives none).

    Raises:
        DicomError: as :func:`read_dicom`, :func:`dicom_frames` and :func:`dicom_spacing`.
    """
    dataset = read_dicom(path)
    (frame,) = dicom_frames(dataset, path)
    spacing = dicom_spacing(dataset, path)
    image = frame[..., ::-1].copy() if frame.ndim == 3 else frame
    return image, None if spacing is None else spacing.spacing


def read_dicom(path: str | Path) -> Any:
    """The DICOM dataset of ``path`` (``pydicom.Dataset``), its pixel data still encoded.

    Raises:
        DicomError: not a DICOM file, truncated, or without pixel data (7FE0,0010).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(str(path))
    except InvalidDicomError:
        raise DicomError(f"{path}: not a DICOM file (no DICM preamble)") from None
    except (EOFError, OSError, ValueError) as error:
        raise DicomError(f"{path}: unreadable DICOM ({error}); is the file truncated?") from None
    if "PixelData" not in dataset:
        raise DicomError(f"{path}: no pixel data (7FE0,0010): not an image")
    return dataset


def tag_name(keyword: str) -> str:
    """``"PatientID (0010,0020)"``: a keyword with its tag, as messages name it."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def dicom_text(dataset: Any, keyword: str, name: str | Path = "DICOM") -> str | None:
    """A text element decoded strictly in the file's SpecificCharacterSet (0008,0005),
    stripped of its padding; None when the element is absent or empty.

    pydicom only warns about an unknown character set (and then reads the bytes as Latin-1)
    or about bytes that do not decode in it (and then puts replacement characters in): an
    identifier read that way is silently wrong. Here both are errors. The value itself never
    appears in a message.

    Raises:
        DicomError: the character set is unknown, or the element's bytes do not decode in it;
            the message names the file and the tag.
    """
    from pydicom import config
    from pydicom.charset import convert_encodings, decode_bytes
    from pydicom.valuerep import TEXT_VR_DELIMS

    element = dataset.get_item(keyword)
    if element is None or element.value in (None, b"", ""):
        return None
    charset = dataset.get("SpecificCharacterSet")
    if charset is not None and not isinstance(charset, str):  # several: a MultiValue
        charset = [str(part) for part in charset]
    shown = "\\".join(charset) if isinstance(charset, list) else charset or ""
    try:
        with config.strict_reading():
            encodings = convert_encodings(charset)
    except (LookupError, ValueError):
        raise DicomError(
            f"{name}: {CHARACTER_SET_TAG}: not a character set pydicom knows, so "
            f"{tag_name(keyword)} cannot be read. Received: {shown!r}"
        ) from None
    value = element.value
    if isinstance(value, bytes):
        try:
            with config.strict_reading():
                value = decode_bytes(value, encodings, TEXT_VR_DELIMS)
        except (LookupError, UnicodeError):
            raise DicomError(
                f"{name}: {tag_name(keyword)}: its bytes do not decode in the file's "
                f"{CHARACTER_SET_TAG} {shown or 'ISO_IR 6 (the default)'!r}"
            ) from None
    text = str(value).strip(" \0")
    return text or None


def _region_box(region: Any, rows: int, columns: int, name: str) -> tuple[int, int, int, int]:
    """The region's box clamped to the image; a box that reaches past the image by more than
    the pixel that inclusive coordinates allow is refused."""
    box = tuple(
        int(region.get(tag, -1))
        for tag in (
            "RegionLocationMinX0",
            "RegionLocationMinY0",
            "RegionLocationMaxX1",
            "RegionLocationMaxY1",
        )
    )
    x0, y0, x1, y1 = box
    if min(box) < 0 or x1 <= x0 or y1 <= y0 or x1 > columns or y1 > rows:
        raise DicomError(
            f"{name}: {REGIONS_TAG}: the tissue region's box (RegionLocationMinX0..MaxY1, "
            f"0018,6018..601E) {list(box)} lies outside the {columns} x {rows} image; the "
            "image was probably resized after the regions were written, so their spacing "
            "does not apply"
        )
    return x0, y0, min(x1, columns - 1), min(y1, rows - 1)


def _positive_pair(values: Any, scale: float = 1.0) -> tuple[float, float] | None:
    """Two numbers times ``scale``, each finite and > 0; None for anything else."""
    try:
        dy, dx = (scale * float(value) for value in values)
    except (TypeError, ValueError):
        return None
    return (dy, dx) if all(math.isfinite(v) and v > 0 for v in (dy, dx)) else None


def _region_spacing(region: Any, name: str) -> tuple[float, float]:
    units = (region.get("PhysicalUnitsYDirection"), region.get("PhysicalUnitsXDirection"))
    if units != (CENTIMETRES, CENTIMETRES):
        raise DicomError(
            f"{name}: {REGIONS_TAG}: PhysicalUnitsXDirection (0018,6024) and "
            f"PhysicalUnitsYDirection (0018,6026) must be 3 (cm) for a tissue image. "
            f"Received: x {units[1]!r}, y {units[0]!r}"
        )
    deltas = (region.get("PhysicalDeltaY"), region.get("PhysicalDeltaX"))
    spacing = _positive_pair(deltas, scale=10.0)  # cm -> mm
    if spacing is None:
        raise DicomError(
            f"{name}: {REGIONS_TAG}: PhysicalDeltaX (0018,602C) and PhysicalDeltaY "
            f"(0018,602E) must be finite and > 0. Received: x {deltas[1]!r}, y {deltas[0]!r}"
        )
    return spacing


def dicom_spacing(dataset: Any, name: str | Path = "DICOM") -> DicomSpacing | None:
    """The pixel spacing of an ultrasound DICOM dataset, in mm; None when it gives none.

    The one region of the Sequence of Ultrasound Regions that is a 2D tissue image
    (RegionSpatialFormat 1, RegionDataType 1) gives it, ``PhysicalDelta`` in cm times 10;
    without regions, ``PixelSpacing`` (0028,0030, row then column spacing in mm).

    Raises:
        DicomError: several 2D tissue regions, units other than cm, a spacing of 0 or less,
            or a region box outside the image; each message names the file and the tag.
    """
    regions = list(dataset.get("SequenceOfUltrasoundRegions") or [])
    tissue = [
        r
        for r in regions
        if r.get("RegionSpatialFormat") == SPATIAL_2D and r.get("RegionDataType") == TISSUE
    ]
    if len(tissue) > 1:
        raise DicomError(
            f"{name}: {REGIONS_TAG}: {len(tissue)} 2D tissue regions (RegionSpatialFormat 1, "
            "RegionDataType 1); cannot tell which one the scan is in"
        )
    if tissue:
        dy, dx = _region_spacing(tissue[0], str(name))
        box = _region_box(tissue[0], int(dataset.Rows), int(dataset.Columns), str(name))
        return DicomSpacing(dy, dx, "ultrasound region", box)
    if "PixelSpacing" in dataset:
        spacing = _positive_pair(dataset.PixelSpacing)
        if spacing is None:
            raise DicomError(
                f"{name}: PixelSpacing (0028,0030) must be two numbers > 0 (mm). "
                f"Received: {dataset.PixelSpacing!r}"
            )
        return DicomSpacing(*spacing, "PixelSpacing")
    return None


def _frame_numbers(frames: str | int, count: int, name: str) -> list[int]:
    if frames == "first":
        return [0]
    if frames == "all":
        return list(range(count))
    if isinstance(frames, int) and not isinstance(frames, bool) and 1 <= frames <= count:
        return [frames - 1]
    raise DicomError(
        f"{name}: frames must be 'first', 'all' or a frame number 1..{count}. Received: {frames!r}"
    )


def dicom_frames(dataset: Any, name: str | Path = "DICOM", frames: str | int = "first") -> list:
    """The frames of a DICOM image as the scanner showed them: uint8 ``(H, W)`` gray or
    ``(H, W, 3)`` RGB (YBR converted, a palette applied).

    Args:
        dataset: a :func:`read_dicom` dataset.
        name: the file, for messages.
        frames: ``"first"`` (default), ``"all"`` or a frame number from 1.

    Raises:
        DicomError: a transfer syntax without an installed decoder (naming it), a 16-bit or
            signed image, or a bad ``frames``.
    """
    from pydicom.pixels import apply_color_lut

    bits, signed = int(dataset.get("BitsAllocated", 8)), int(dataset.get("PixelRepresentation", 0))
    if bits != 8 or signed:
        raise DicomError(
            f"{name}: BitsAllocated (0028,0100) {bits} and PixelRepresentation (0028,0103) "
            f"{signed}: only 8-bit unsigned images, as ultrasound scanners export them"
        )
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    chosen = _frame_numbers(frames, count, str(name))
    try:
        pixels = dataset.pixel_array  # YBR is converted to RGB
    except (NotImplementedError, RuntimeError, ValueError) as error:
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        if isinstance(error, ValueError) and not getattr(syntax, "is_compressed", True):
            raise DicomError(
                f"{name}: PixelData (7FE0,0010) cannot be read ({error}); is the file truncated?"
            ) from None
        label = getattr(syntax, "name", syntax)
        raise DicomError(
            f"{name}: TransferSyntaxUID (0002,0010) {label}: no decoder for it here ({error})"
        ) from None
    if dataset.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
        if pixels.dtype != np.uint8:  # 16-bit palette entries
            pixels = (pixels >> 8).astype(np.uint8)
    if count == 1:
        pixels = pixels[None]
    return [np.ascontiguousarray(pixels[k]) for k in chosen]
