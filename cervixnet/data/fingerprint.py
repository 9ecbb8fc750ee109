"""A data set's fingerprint: the facts a training plan is made from (``cervixnet plan``).

:func:`fingerprint` reads a manifest and, for up to ``max_images`` of its rows (evenly spread,
so a large set costs no more than a small one), the image files and their masks: sizes and
aspect ratios, pixel spacing, the fraction of each image that the mask covers, the label
balance, and the number of images and patients. Nothing is written; no TensorFlow is needed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cervixnet.data.imagefile import read_image
from cervixnet.data.manifest import (
    DEFAULT_CLASSES,
    MASK_COLUMN,
    read_manifest,
    resolve_manifest_path,
)

# The manifest columns that give a row's pixel spacing in millimetres.
SPACING_COLUMNS = ("pixel_spacing_mm", "spacing_x_mm", "spacing_y_mm")


@dataclasses.dataclass(frozen=True)
class DataFingerprint:
    """What a plan needs to know about a data set.

    Attributes:
        source: the manifest read.
        images: rows in the manifest; ``patients``: distinct ``patient_id`` values.
        read: how many images were opened for the size and mask figures.
        median_size: median ``(height, width)`` in pixels of the images read.
        smallest_size, largest_size: the ``(height, width)`` with the fewest and most pixels.
        aspect_ratio: median width / height; ``aspect_range``: its minimum and maximum.
        channels: the largest channel count seen (1 grey, 3 colour).
        spacing_mm: median pixel spacing in mm, ``None`` without a spacing column.
        masked_images: rows with a ``mask`` file.
        foreground_fraction: median fraction of an image's pixels inside its mask (``None``
            when no mask was read); ``foreground_range``: the smallest and largest.
        labels: counts of ``"preterm"`` (1), ``"control"`` (0) and ``"unknown"`` labels.
    """

    source: str
    images: int
    patients: int
    read: int
    median_size: tuple[int, int]
    smallest_size: tuple[int, int]
    largest_size: tuple[int, int]
    aspect_ratio: float
    aspect_range: tuple[float, float]
    channels: int
    spacing_mm: float | None
    masked_images: int
    foreground_fraction: float | None
    foreground_range: tuple[float, float] | None
    labels: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (tuples as lists)."""
        return json_ready(dataclasses.asdict(self))


def json_ready(value: Any) -> Any:
    """Tuples as lists and NumPy scalars as Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def fingerprint(
    path: str | Path,
    max_images: int = 1000,
    *,
    mask_column: str = MASK_COLUMN,
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> DataFingerprint:
    """Reads the fingerprint of the data set at ``path`` (a folder or its ``manifest.csv``).

    Args:
        path: the data set.
        max_images: at most this many images (and their masks) are opened, evenly spread
            over the manifest's rows; default 1000.
        mask_column, classes: which column holds the masks, and their classes
            (``data.mask_column``, ``data.classes``; see ``read_manifest``).

    Raises:
        DataError: the manifest fails validation (every row, its images decoded, as
            ``cervixnet data validate`` checks it), naming file, row and column.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1. Received: {max_images}")
    manifest = read_manifest(
        resolve_manifest_path(path), decode=True, mask_column=mask_column, classes=classes
    )
    records = manifest.records
    spread = np.linspace(0, len(records) - 1, min(max_images, len(records)))
    chosen = sorted(set(spread.astype(int).tolist()))
    sizes, channels, fractions = [], 1, []
    for position in chosen:
        record = records[position]
        image = read_image(record.image)
        sizes.append(image.shape[:2])
        channels = max(channels, 1 if image.ndim == 2 else min(3, image.shape[2]))
        if record.mask is not None:
            mask = read_image(record.mask)
            fractions.append(float(np.count_nonzero(mask.reshape(*mask.shape[:2], -1).max(-1)))
                             / (mask.shape[0] * mask.shape[1]))  # fmt: skip
    heights = np.array([s[0] for s in sizes], float)
    widths = np.array([s[1] for s in sizes], float)
    aspects = widths / heights
    pixels = heights * widths
    labels = [r.label for r in records]
    return DataFingerprint(
        source=str(manifest.path),
        images=len(records),
        patients=len({r.patient_id for r in records}),
        read=len(chosen),
        median_size=(int(np.median(heights)), int(np.median(widths))),
        smallest_size=tuple(int(v) for v in sizes[int(np.argmin(pixels))]),
        largest_size=tuple(int(v) for v in sizes[int(np.argmax(pixels))]),
        aspect_ratio=round(float(np.median(aspects)), 4),
        aspect_range=(round(float(aspects.min()), 4), round(float(aspects.max()), 4)),
        channels=channels,
        spacing_mm=_median_spacing(manifest.records),
        masked_images=sum(r.mask is not None for r in records),
        foreground_fraction=round(float(np.median(fractions)), 4) if fractions else None,
        foreground_range=(
            (round(min(fractions), 4), round(max(fractions), 4)) if fractions else None
        ),
        labels={
            "preterm": labels.count(1),
            "control": labels.count(0),
            "unknown": labels.count(None),
        },
    )


def _median_spacing(records: Sequence) -> float | None:
    values = []
    for record in records:
        for column in SPACING_COLUMNS:
            text = record.extra.get(column)
            try:
                value = float(text) if text else math.nan
            except ValueError:
                value = math.nan
            if math.isfinite(value) and value > 0:
                values.append(value)
                break
    return round(float(np.median(values)), 6) if values else None
