"""The bad-input corpus: broken data sets, image files and configs, built deterministically.

Every case starts from the tiny data set of ``tests/conftest.py`` (10 patients, 20 colour
images of 64 x 48 or 64 x 56 pixels, 0/255 masks) and breaks one thing, so that exactly one
problem is reported. Rows count the header as row 1; the broken row is row 4 (patient
``p01``, label 1, a 64 x 48 image) unless said otherwise. ``tests/test_bad_inputs.py`` runs
each case through every command that reads it.

Data sets that are refused (``data validate``, ``data prepare``, ``train``, ``evaluate
--data``), with the text of their one line (file ``manifest.csv``, row, column: reason):

==========================  =======  ==========  ==============================================
case                        row      column      reason contains
==========================  =======  ==========  ==============================================
image-zero-byte             4        image       empty file (0 bytes), not an image
image-truncated-png         4        image       truncated PNG
image-truncated-jpeg        4        image       truncated JPEG
image-not-an-image          4        image       cannot be decoded as an image
image-random-bytes          4        image       cannot be decoded as an image
image-1x1                   4        image       1x1 pixels is too small
image-float32               4        image       float32 pixels are not supported
image-is-a-folder           4        image       a folder, not an image file
image-missing               4        image       file not found
image-empty-cell            4        image       empty; every row needs an image path
mask-missing                4        mask        file not found
mask-zero-byte              4        mask        empty file (0 bytes)
mask-wrong-size             4        mask        the mask is 10x10 pixels but its image is 64x48
mask-not-binary             4        mask        not a binary mask
bezier-outside-image        4        bezier      outside the 64x48 image
bezier-not-numbers          4        bezier      must hold two numbers
bezier-three-points         4        bezier      found 3
bezier-missing-comma        4        bezier      must be "x,y"
bezier-nan                  4        bezier      finite numbers
label-2                     4        label       Received: '2'
label-yes                   4        label       Received: 'yes'
label-NaN                   4        label       Received: 'NaN' (leave the cell empty ...)
spacing-zero                4        pixel_sp... Received: '0'
spacing-negative            4        pixel_sp... Received: '-0.1'
spacing-decimal-comma       4        pixel_sp... Received: '0,2'
spacing-nan                 4        pixel_sp... Received: 'nan'
spacing-missing-in-one-row  4        pixel_sp... no pixel spacing here, but row 2 has one
spacing-one-axis            4        spacing_y   empty, but spacing_x_mm is given
patient-conflicting-labels  5        label       patient 'p01' has label 0 here but 1 in row 4
patient-empty               4        patient_id  empty; every row needs a patient id
duplicate-row               22       image       the same image as row 4
extra-cells                 22       (extra      the row has more cells than the header
                                     cells)
manifest-header-only        -        -           the manifest has no rows
manifest-zero-byte          -        -           empty file (0 bytes)
manifest-missing-column     -        -           missing required column(s) label
manifest-repeated-column    1        label       the header names column(s) 'label' more ...
manifest-not-utf8           -        -           not a UTF-8 text file
==========================  =======  ==========  ==============================================

Data sets that work (documented conversions): a path with spaces, a non-ASCII path, an
RGBA image, a gray + alpha image, 16-bit gray and colour images, a 0/1 mask, an RGBA mask,
labels written ``1.0``, a manifest with a byte-order mark and CRLF line ends, header names
padded with spaces. A data set without a single preterm image passes ``data validate`` and
``data prepare`` (a segmentation-only data set) but the joint model refuses to train on it.
"""

from __future__ import annotations

import csv
import dataclasses
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import rewrite_manifest

BROKEN = 2  # position of the broken record: row 4 of the file
BROKEN_ROW = BROKEN + 2


@dataclasses.dataclass(frozen=True)
class Case:
    """One broken (or odd but valid) input.

    Attributes:
        name: the test id.
        build: ``build(folder)`` edits the tiny data set in ``folder`` in place; edits of one
            row take ``build(folder, position)`` to break another record than row 4's.
        expected: text the one-line message contains (empty for accepted cases).
        row: the row the message names (``None``: the whole file).
        column: the column the message names (``None``: the whole file).
    """

    name: str
    build: Callable[..., None]
    expected: str = ""
    row: int | None = BROKEN_ROW
    column: str | None = None


# Files


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of ``pixels``: (H, W) gray, (H, W, 2) gray + alpha, 8 or 16 bit.

    Written by hand for gray + alpha, which OpenCV cannot encode.
    """
    if pixels.ndim == 2 or pixels.shape[2] != 2:
        return cv2.imencode(".png", pixels)[1].tobytes()
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[y].astype(">u1").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 4, 0, 0, 0)  # 8 bit, gray + alpha
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def scan(height: int = 48, width: int = 64, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """A deterministic noisy picture of the given shape and pixel type."""
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    shape = (height, width) if channels == 1 else (height, width, channels)
    return (rng.random(shape) * top).astype(dtype)


def encoded(extension: str, pixels: np.ndarray) -> bytes:
    return cv2.imencode(extension, pixels)[1].tobytes()


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


IMAGE_FILES: dict[str, bytes] = {
    "zero-byte.png": b"",
    "truncated.png": truncated(encoded(".png", scan())),
    "truncated.jpg": truncated(encoded(".jpg", scan())),
    "not-an-image.png": b"image,patient_id,label,mask\nthis is a CSV file, not a scan\n",
    "random-bytes.png": np.random.default_rng(3).integers(0, 256, 600, np.uint8).tobytes(),
    "one-pixel.png": encoded(".png", scan(1, 1)),
    "float32.tiff": encoded(".tiff", scan(48, 64, 1, np.float32)),
}
"""Image files that no command can use, by file name."""

GOOD_IMAGE_FILES: dict[str, bytes] = {
    "rgba.png": encoded(".png", scan(channels=4)),
    "gray-alpha.png": png_bytes(scan(channels=2)),
    "gray-16-bit.png": encoded(".png", scan(channels=1, dtype=np.uint16)),
    "colour-16-bit.png": encoded(".png", scan(channels=3, dtype=np.uint16)),
    "gray.jpg": encoded(".jpg", scan(channels=1)),
    "scan with spaces.png": encoded(".png", scan()),
    "échographie 子宫颈.png": encoded(".png", scan()),
}
"""Image files that are read, converted as documented, by file name."""


# Manifest edits


def _edit(**cells: str) -> Callable[..., None]:
    """Sets cells of the broken row (``column=value``)."""

    def build(folder: Path, position: int = BROKEN) -> None:
        def edit(fields, rows):
            for column, value in cells.items():
                if column not in fields:
                    fields = [*fields, column]
                    for row in rows:
                        row.setdefault(column, "")
                rows[position][column] = value
            return fields, rows

        rewrite_manifest(folder / "manifest.csv", edit)

    return build


def _file(column: str, name: str, data: bytes) -> Callable[..., None]:
    """Writes ``data`` as ``images/<name>`` (or ``masks/``) and points the broken row at it."""

    def build(folder: Path, position: int = BROKEN) -> None:
        sub = "images" if column == "image" else "masks"
        (folder / sub / f"{position}-{name}").write_bytes(data)
        _edit(**{column: f"{sub}/{position}-{name}"})(folder, position)

    return build


def _bezier(text: str) -> Callable[..., None]:
    return _edit(mask="", bezier=text)


def _mask_array(mask: np.ndarray) -> Callable[..., None]:
    return _file("mask", "edited.png", encoded(".png", mask))


def _rows(edit: Callable[[list[str], list[dict]], tuple[list[str], list[dict]]]):
    return lambda folder, position=BROKEN: rewrite_manifest(folder / "manifest.csv", edit)


def _text(transform: Callable[[str], str | bytes]) -> Callable[..., None]:
    """Rewrites the manifest's text: ``transform(text)`` gives the new text or bytes."""

    def build(folder: Path, position: int = BROKEN) -> None:
        manifest = folder / "manifest.csv"
        new = transform(manifest.read_text(encoding="utf-8"))
        manifest.write_bytes(new if isinstance(new, bytes) else new.encode("utf-8"))

    return build


def _spacing_but_broken(fields, rows):
    for row in rows:
        row["pixel_spacing_mm"] = "0.2"
    rows[BROKEN]["pixel_spacing_mm"] = ""
    return [*fields, "pixel_spacing_mm"], rows


def _duplicate_row(fields, rows):
    return fields, [*rows, dict(rows[BROKEN])]


def _all_controls(fields, rows):
    for row in rows:
        row["label"] = "0"
    return fields, rows


def _conflict(fields, rows):
    rows[BROKEN + 1]["label"] = "0"  # p01's second image; its first says 1
    return fields, rows


def _drop_label(fields, rows):
    return [f for f in fields if f != "label"], [
        {k: v for k, v in r.items() if k != "label"} for r in rows
    ]


def _gradient_mask() -> np.ndarray:
    return np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))


def own_mask(folder: Path, position: int = BROKEN) -> np.ndarray:
    """The mask file the tiny data set wrote for a record, as (H, W) 0/255."""
    name = manifest_rows(folder)[position]["mask"]
    return cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE)


def _rgba_mask(folder: Path, position: int = BROKEN) -> None:
    """The row's own mask as RGBA with an opaque alpha channel (alpha is not cervix)."""
    mask = own_mask(folder, position)
    rgba = np.dstack([mask, mask, mask, np.full_like(mask, 255)])
    _file("mask", "rgba.png", encoded(".png", rgba))(folder, position)


def _zero_one_mask(folder: Path, position: int = BROKEN) -> None:
    mask = (own_mask(folder, position) > 0).astype(np.uint8)
    _file("mask", "zero-one.png", encoded(".png", mask))(folder, position)


def _rename_image(new_name: str) -> Callable[..., None]:
    """Moves the row's image to ``images/<position>-<new_name>`` (folders created)."""

    def build(folder: Path, position: int = BROKEN) -> None:
        old = manifest_rows(folder)[position]["image"]
        name = f"images/{position}-{new_name}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / old).rename(folder / name)
        _edit(image=name)(folder, position)

    return build


def _converted_image(name: str) -> Callable[..., None]:
    """Replaces the broken row's image by a 64 x 48 file of another kind (same size)."""
    return _file("image", name, GOOD_IMAGE_FILES[name])


ERRORS: tuple[Case, ...] = (
    Case("image-zero-byte", _file("image", "zero-byte.png", IMAGE_FILES["zero-byte.png"]),
         "empty file (0 bytes), not an image: images/2-zero-byte.png", column="image"),
    Case("image-truncated-png", _file("image", "truncated.png", IMAGE_FILES["truncated.png"]),
         "truncated PNG", column="image"),
    Case("image-truncated-jpeg", _file("image", "truncated.jpg", IMAGE_FILES["truncated.jpg"]),
         "truncated JPEG", column="image"),
    Case("image-not-an-image",
         _file("image", "not-an-image.png", IMAGE_FILES["not-an-image.png"]),
         "cannot be decoded as an image", column="image"),
    Case("image-random-bytes",
         _file("image", "random-bytes.png", IMAGE_FILES["random-bytes.png"]),
         "cannot be decoded as an image", column="image"),
    Case("image-1x1", _file("image", "one-pixel.png", IMAGE_FILES["one-pixel.png"]),
         "1x1 pixels is too small", column="image"),
    Case("image-float32", _file("image", "float32.tiff", IMAGE_FILES["float32.tiff"]),
         "float32 pixels are not supported", column="image"),
    Case("image-is-a-folder", _edit(image="images"), "a folder, not an image file: images",
         column="image"),
    Case("image-missing", _edit(image="images/missing.png"),
         "file not found: images/missing.png", column="image"),
    Case("image-empty-cell", _edit(image=""), "empty; every row needs an image path",
         column="image"),
    Case("mask-missing", _edit(mask="masks/missing.png"), "file not found: masks/missing.png",
         column="mask"),
    Case("mask-zero-byte", _file("mask", "zero-byte.png", b""), "empty file (0 bytes)",
         column="mask"),
    Case("mask-wrong-size", _mask_array(np.zeros((10, 10), np.uint8)),
         "the mask is 10x10 pixels but its image is 64x48", column="mask"),
    Case("mask-not-binary", _mask_array(_gradient_mask()), "not a binary mask", column="mask"),
    Case("bezier-outside-image", _bezier("10,10 20,10 20,90 10,20"),
         "control point(s) 20,90 outside the 64x48 image", column="bezier"),
    Case("bezier-not-numbers", _bezier("a,b 20,10 20,30 10,30"), "must hold two numbers",
         column="bezier"),
    Case("bezier-three-points", _bezier("10,10 20,10 20,30"), "found 3", column="bezier"),
    Case("bezier-missing-comma", _bezier("10 10 20 10"), 'must be "x,y"', column="bezier"),
    Case("bezier-nan", _bezier("nan,10 20,10 20,30 10,30"), "finite numbers", column="bezier"),
    Case("label-2", _edit(label="2"), "Received: '2'", column="label"),
    Case("label-yes", _edit(label="yes"), "Received: 'yes'", column="label"),
    Case("label-NaN", _edit(label="NaN"),
         "Received: 'NaN' (leave the cell empty for an unknown label)", column="label"),
    Case("spacing-zero", _edit(pixel_spacing_mm="0"), "Received: '0'",
         column="pixel_spacing_mm"),
    Case("spacing-negative", _edit(pixel_spacing_mm="-0.1"), "Received: '-0.1'",
         column="pixel_spacing_mm"),
    Case("spacing-decimal-comma", _edit(pixel_spacing_mm="0,2"), "Received: '0,2'",
         column="pixel_spacing_mm"),
    Case("spacing-nan", _edit(pixel_spacing_mm="nan"), "Received: 'nan'",
         column="pixel_spacing_mm"),
    Case("spacing-missing-in-one-row", _rows(_spacing_but_broken),
         "no pixel spacing here, but row 2 has one", column="pixel_spacing_mm"),
    Case("spacing-one-axis", _edit(spacing_x_mm="0.2"), "empty, but spacing_x_mm is given",
         column="spacing_y_mm"),
    Case("patient-conflicting-labels", _rows(_conflict),
         "patient 'p01' has label 0 here but 1 in row 4", row=BROKEN_ROW + 1, column="label"),
    Case("patient-empty", _edit(patient_id=""), "empty; every row needs a patient id",
         column="patient_id"),
    Case("duplicate-row", _rows(_duplicate_row), "the same image as row 4", row=22,
         column="image"),
    Case("extra-cells", _text(lambda t: t + "images/p09_1.png,p09,1,masks/p09_1.png,A,surplus\n"),
         "the row has more cells than the header", row=22, column="(extra cells)"),
    Case("manifest-header-only", _text(lambda t: t.splitlines()[0] + "\n"),
         "the manifest has no rows", row=None),
    Case("manifest-zero-byte", _text(lambda t: b""), "empty file (0 bytes)", row=None),
    Case("manifest-missing-column", _rows(_drop_label), "missing required column(s) label",
         row=None),
    Case("manifest-repeated-column",
         _text(lambda t: t.replace("site", "label", 1)),
         "the header names column(s) 'label' more than once", row=1, column="label"),
    Case("manifest-not-utf8", _text(lambda t: t.replace(",A", ",Só").encode("latin-1")),
         "not a UTF-8 text file", row=None),
)  # fmt: skip
"""Data sets refused by every command that reads them, with one line each."""

ACCEPTED: tuple[Case, ...] = (
    Case("path-with-spaces", _rename_image("scan one/p01 first.png")),
    Case("path-non-ascii", _rename_image("échographie/子宫颈 ü.png")),
    Case("image-rgba", _converted_image("rgba.png")),
    Case("image-gray-alpha", _converted_image("gray-alpha.png")),
    Case("image-16-bit-gray", _converted_image("gray-16-bit.png")),
    Case("image-16-bit-colour", _converted_image("colour-16-bit.png")),
    Case("image-gray-jpeg", _converted_image("gray.jpg")),
    Case("mask-zero-one", _zero_one_mask),
    Case("mask-rgba", _rgba_mask),
    Case("label-float", _edit(label="1.0")),
    Case("manifest-bom-crlf", _text(lambda t: ("\ufeff" + t.replace("\n", "\r\n")).encode())),
    Case("manifest-padded-header",
         _text(lambda t: t.replace("image,patient_id", " image , patient_id ", 1))),
)  # fmt: skip
"""Odd but valid data sets: every command reads them, converting as documented."""

NO_PRETERM = Case("no-preterm", _rows(_all_controls), "needs preterm (1) and control (0)",
                  row=None, column="label")  # fmt: skip
"""Valid data, but the joint model cannot learn a label from a single class."""


def manifest_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))
