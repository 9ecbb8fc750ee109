"""A prepared copy of a data set: calipers removed, masks built, images resized, split saved.

:func:`prepare` reads and validates a manifest, then for every row

1. decodes the image (PNG, JPEG, BMP or TIFF; 8 or 16 bit; gray, colour or with alpha),
2. fills yellow and green caliper marks by Telea inpainting and converts to grayscale
   (:mod:`cervixnet.data.calipers`),
3. builds the mask: the ``mask`` file when the row has one, otherwise the ``bezier`` control
   points of each annotator rasterised (:mod:`cervixnet.data.bezier`) and fused by majority
   vote, union or intersection, recording the annotators' mean pairwise IoU,
4. fits image (area interpolation when shrinking, bilinear when enlarging) and mask
   (nearest neighbour) into ``data.image_size``: letterboxed (aspect ratio kept, zero padding)
   or stretched, as ``data.resize`` says (:mod:`cervixnet.data.letterbox`),

and writes ``images/``, ``masks/``, ``native_masks/`` (each mask at its scan's own size, which
segmentation is scored against), ``manifest.csv`` (the source's columns plus what was done
to each row; a pixel spacing becomes ``spacing_y_mm`` and ``spacing_x_mm``, the prepared
image's, with the scan's own in ``native_spacing_y_mm`` and ``native_spacing_x_mm``),
``splits.json`` (the patient-level split a run with the same seed makes), ``report.json``
and ``report.md`` (counts per class, site and split, filled pixels and inter-annotator
agreement) and ``prepared.json`` (the settings, for reuse checks).

The source folder is only read. The copy is written to a staging folder next to ``out_dir``
and renamed into place when complete, so an interrupted run leaves no half-written copy.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cervixnet.config import AUTO, AnnotationConfig, CaliperConfig, Config
from cervixnet.data import bezier, imagefile
from cervixnet.data.calipers import CaliperSpec, remove_calipers
from cervixnet.data.letterbox import fit_image, letterbox_geometry
from cervixnet.data.manifest import (
    DEFAULT_CLASSES,
    MANIFEST_NAME,
    NATIVE_SPACING_COLUMNS,
    REQUIRED_COLUMNS,
    SPACING_AXIS_COLUMNS,
    SPACING_COLUMN,
    Manifest,
    Record,
    read_manifest,
)
from cervixnet.errors import ConfigError, DataError, check_output_folder, inside_folder

if TYPE_CHECKING:
    from cervixnet.data.splits import Splits

PREPARED_INFO_NAME = "prepared.json"
# Bumped whenever prepare writes different pixels for the same input and settings, so that
# cached prepared copies (cervixnet.data.sources) are rebuilt.
PREPARE_VERSION = 3
FUSIONS = ("majority", "union", "intersection")
# Columns prepare adds to the manifest, after the source's own.
ADDED_COLUMNS = (
    "source_image",
    "source_row",
    "source_size",
    "native_mask",
    "mask_source",
    "annotators",
    "inter_annotator_iou",
    "filled_pixels",
)


@dataclasses.dataclass(frozen=True)
class PreparedRow:
    """What :func:`prepare_record` made of one manifest row.

    Attributes:
        image: grayscale ``(height, width)`` uint8 or uint16, calipers filled, fitted into the
            network's input size.
        mask: ``(height, width)`` uint8 in {0, 1}, or ``None`` when the row has no annotation.
        native_mask: the same mask at the source image's size, or ``None``.
        mask_source: ``"file"``, ``"bezier"`` or ``"none"``.
        annotators: number of Bézier annotations on the row (0 without a ``bezier`` column).
        inter_annotator_iou: mean pairwise IoU of the annotators' masks; NaN below two.
        filled_pixels: caliper pixels filled, at the source resolution.
        source_size: ``(height, width)`` of the source image.
        scale: ``(sx, sy)`` from source to prepared pixels.
        offset: ``(x, y)`` of the source's top-left corner in the prepared image (the
            letterbox's padding).
    """

    image: np.ndarray
    mask: np.ndarray | None
    native_mask: np.ndarray | None
    mask_source: str
    annotators: int
    inter_annotator_iou: float
    filled_pixels: int
    source_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[int, int] = (0, 0)


def read_image(path: str | Path) -> np.ndarray:
    """Decodes an image file as stored (any OpenCV format, 8 or 16 bit, 1 to 4 channels).

    Reads the bytes with NumPy and decodes them in memory, so that paths with non-ASCII
    characters work on every platform (:func:`cervixnet.data.imagefile.read_image`).

    Raises:
        DataError: naming the file and why it cannot be used (missing, empty, truncated, not
            an image, unsupported pixels, too small).
    """
    return imagefile.read_image(path)


def fuse_masks(masks: Sequence[np.ndarray], fusion: str = "majority") -> np.ndarray:
    """Fuses annotators' binary masks ``(H, W)`` into one.

    ``"majority"`` keeps a pixel that more than half of the annotators marked (with two
    annotators this is their intersection), ``"union"`` any, ``"intersection"`` all.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"`fusion` must be one of {list(FUSIONS)}. Received: fusion={fusion!r}")
    if not masks:
        raise ValueError("fuse_masks needs at least one mask. Received: masks=[]")
    votes = np.sum([np.asarray(m) > 0 for m in masks], axis=0)
    needed = {"majority": len(masks) // 2 + 1, "union": 1, "intersection": len(masks)}[fusion]
    return (votes >= needed).astype(np.uint8)


def mean_pairwise_iou(masks: Sequence[np.ndarray]) -> float:
    """Mean IoU over all pairs of masks; NaN for fewer than two. Two empty masks agree (1)."""
    scores = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            a, b = np.asarray(masks[i]) > 0, np.asarray(masks[j]) > 0
            union = np.logical_or(a, b).sum()
            scores.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return float(np.mean(scores)) if scores else math.nan


def caliper_spec(config: CaliperConfig) -> CaliperSpec:
    """The :class:`CaliperSpec` of a ``data.calipers`` config section."""
    return CaliperSpec(
        yellow_hue=config.yellow_hue,
        green_hue=config.green_hue,
        min_saturation=config.min_saturation,
        min_value=config.min_value,
        grow_pixels=config.grow_pixels,
        inpaint_radius=config.inpaint_radius,
    )


def prepare_record(
    record: Record,
    image_size: Sequence[int],
    annotations: AnnotationConfig | None = None,
    calipers: CaliperConfig | None = None,
    resize: str = "letterbox",
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> PreparedRow:
    """Cleans, annotates and resizes one manifest row (see the module docstring).

    Args:
        record: a validated manifest row.
        image_size: ``(height, width)`` of the prepared image.
        resize: ``"letterbox"`` (aspect kept, zero padding) or ``"stretch"``.
        annotations: how ``bezier`` points become a mask; default ``AnnotationConfig()``.
        calipers: caliper removal settings (``enabled: false`` converts to gray only);
            default ``CaliperConfig()``.
        classes: the names of the mask's classes (``data.classes``): one, a binary mask
            (non-zero is the organ); more, class ids kept as they are, and Bézier annotations
            of each named class painted with its id (:func:`annotation_mask`).

    Raises:
        DataError: naming the file, for an image that is not 8- or 16-bit.
    """
    annotations = annotations or AnnotationConfig()
    calipers = calipers or CaliperConfig()
    gray, filled = clean_image(read_image(record.image), calipers, name=record.image)
    height, width = gray.shape[:2]
    out_h, out_w = (int(s) for s in image_size)

    mask, mask_source, agreement = None, "none", math.nan
    parsed = parse_annotations(record.extra.get("bezier", ""))
    n_annotators = max(Counter(name for name, _ in parsed).values(), default=0)
    if parsed:
        drawn, agreement = annotation_mask(parsed, height, width, annotations, classes)
    if record.mask is not None:
        values = imagefile.mask_values(read_image(record.mask))
        mask = (values > 0) if len(classes) == 1 else values
        mask, mask_source = mask.astype(np.uint8), "file"
    elif parsed:
        mask, mask_source = drawn, "bezier"

    box = letterbox_geometry((height, width), (out_h, out_w), resize)
    image = fit_image(gray, (out_h, out_w), resize)
    fitted_mask = None if mask is None else fit_image(mask, (out_h, out_w), resize, "nearest")
    return PreparedRow(
        image=image,
        mask=fitted_mask,
        native_mask=mask,
        mask_source=mask_source,
        annotators=n_annotators,
        inter_annotator_iou=agreement,
        filled_pixels=filled,
        source_size=(height, width),
        scale=(box.content_size[1] / width, box.content_size[0] / height),
        offset=(box.left, box.top),
    )


def clean_image(
    source: np.ndarray, calipers: CaliperConfig | None = None, name: str | Path = "image"
) -> tuple[np.ndarray, int]:
    """A decoded image -> ``(grayscale image, caliper pixels filled)``.

    Fills yellow and green caliper marks by Telea inpainting when ``calipers.enabled``
    (default ``CaliperConfig()``), else only converts to grayscale. The dtype is kept.

    Raises:
        DataError: naming ``name``, for an image that is not 8- or 16-bit, has more than four
            channels or is too small (:func:`cervixnet.data.imagefile.pixel_problem`).
    """
    calipers = calipers or CaliperConfig()
    problem = imagefile.pixel_problem(source)
    if problem:
        raise DataError(f"{name}: {problem}")
    if source.ndim == 3 and source.shape[2] == 2:  # gray + alpha: no colour marks
        source = source[..., 0]
    if calipers.enabled:
        cleaned = remove_calipers(source, caliper_spec(calipers))
        return cleaned.image, cleaned.filled_pixels
    return imagefile.to_gray(source), 0


def parse_annotations(text: str | None) -> list[tuple[str | None, np.ndarray]]:
    """The ``bezier`` cell: ``(class name or None, (4, 2) control points)`` per annotation,
    in order (annotations separated by ``;``, each optionally ``"<class>: "`` first)."""
    annotations = []
    for part in (text or "").split(";"):
        if part.strip():
            name, points = bezier.split_class(part)
            annotations.append((name, bezier.parse_points(points)))
    return annotations


def annotation_mask(
    annotations: Sequence[tuple[str | None, np.ndarray]],
    height: int,
    width: int,
    config: AnnotationConfig,
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> tuple[np.ndarray, float]:
    """The mask of a row's Bézier annotations, and the annotators' agreement.

    Each class's annotators are rasterised (``config.reading``) and fused
    (``config.fusion``); an annotation without a class name outlines the whole organ: with one
    class it is that class, with several it paints nothing (the row's mask file is its mask)
    and counts for the agreement only. The classes are painted in order, so where two overlap
    the later wins. Returns uint8 ``(H, W)``: 0/1 for one class, class ids for several; and
    the mean pairwise IoU of each class's annotators (the organ's too), averaged over those
    with two or more (NaN without).
    """
    mask = np.zeros((height, width), np.uint8)
    agreements = []
    groups = [(index, name) for index, name in enumerate(classes, start=1)]
    if len(classes) > 1:
        groups.append((0, None))  # the organ's outlines, unnamed: agreement only
    for index, name in groups:
        drawn = [
            bezier.rasterize(points, height, width, mode=config.reading)
            for annotated, points in annotations
            if annotated == name or (annotated is None and index == 1)
        ]
        if not drawn:
            continue
        if index > 0:
            mask[fuse_masks(drawn, config.fusion) > 0] = index
        if len(drawn) > 1:
            agreements.append(mean_pairwise_iou(drawn))
    return mask, float(np.mean(agreements)) if agreements else math.nan


def is_prepared(folder: str | Path) -> bool:
    """Whether ``folder`` holds a copy written by :func:`prepare`."""
    return (Path(folder) / PREPARED_INFO_NAME).is_file()


def load_prepared_info(folder: str | Path) -> dict[str, Any] | None:
    """The ``prepared.json`` of a prepared folder, or ``None``."""
    path = Path(folder) / PREPARED_INFO_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def prepare_settings(config: Config) -> dict[str, Any]:
    """The configuration that decides a prepared copy's pixels (and its saved split)."""
    data = config.to_dict()["data"]
    return {
        "prepare_version": PREPARE_VERSION,
        "image_size": data["image_size"],
        "resize": data["resize"],
        "annotations": data["annotations"],
        "calipers": data["calipers"],
        "classes": data["classes"],
        "mask_column": data["mask_column"],
        "split": data["split"],
        "seed": config.seed,
    }


def source_fingerprint(manifest_path: str | Path) -> str:
    """SHA-256 of a manifest's bytes and the size and modification time of every file it names.

    Changes when the manifest or any image or mask it lists changes, so a cached prepared copy
    of an edited data set is never reused.
    """
    manifest_path = Path(manifest_path)
    digest = hashlib.sha256(manifest_path.read_bytes())
    try:
        _hash_listed_files(manifest_path, digest)
    except (UnicodeDecodeError, csv.Error):
        digest.update(b"unreadable manifest\n")  # validation reports it, with row and column
    return digest.hexdigest()


def _hash_listed_files(manifest_path: Path, digest) -> None:
    with manifest_path.open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            for column in (c for c in row if c == "image" or (c or "").endswith("mask")):
                name = row.get(column)
                name = name.strip() if isinstance(name, str) else ""
                if not name:
                    continue
                path = Path(name).expanduser()
                path = path if path.is_absolute() else manifest_path.parent / path
                try:
                    stat = path.stat()
                    digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{name}\0missing\n".encode())


def prepare(
    source: str | Path,
    out_dir: str | Path,
    config: Config,
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Writes a prepared copy of the data set at ``source`` into ``out_dir``.

    Args:
        source: a data folder or its ``manifest.csv``; only read.
        out_dir: a new (or empty) folder for the copy.
        config: ``data.image_size``, ``data.annotations``, ``data.calipers``, ``data.classes``,
            ``data.mask_column``, ``data.split`` and ``seed`` are used. The masks are written
            0/255 for one class, as class ids for several.
        workers: threads decoding and cleaning images in parallel; default: one per CPU.
        progress: called with the number of rows finished since the last call.

    Returns:
        The prepared ``manifest.csv``.

    Raises:
        DataError: the source fails validation (the first problem, with the count of the
            rest), or ``out_dir`` is not empty.
    """
    from cervixnet.data.splits import split_patients

    out_dir = check_output_folder(out_dir)
    classes = config.data.classes
    manifest = read_manifest(
        source, decode=True, mask_column=config.data.mask_column, classes=classes
    )
    image_size = config.data.image_size
    if image_size == AUTO:
        raise ConfigError(
            "data.image_size is 'auto': plan it first (cervixnet.training.plan.plan_run) or set it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        (staging / "native_masks").mkdir()
        names = _output_names(manifest.records)

        def work(position: int) -> dict[str, str]:
            record = manifest.records[position]
            row = prepare_record(
                record,
                image_size,
                config.data.annotations,
                config.data.calipers,
                config.data.resize,
                classes,
            )
            image_name = f"images/{names[position]}"
            _write_png(inside_folder(staging, image_name), row.image)
            mask_name = native_name = ""
            if row.mask is not None:
                mask_name = f"masks/{names[position]}"
                scale = 255 if len(classes) == 1 else 1  # binary masks 0/255, else class ids
                _write_png(inside_folder(staging, mask_name), row.mask * scale)
                native_name = f"native_masks/{names[position]}"
                _write_png(inside_folder(staging, native_name), row.native_mask * scale)
            return _output_row(manifest, record, row, image_name, mask_name, native_name)

        rows: list[dict[str, str]] = []
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for row in pool.map(work, range(len(manifest.records))):
                rows.append(row)
                if progress is not None:
                    progress(1)

        columns = list(REQUIRED_COLUMNS) + [
            c for c in _source_columns(manifest) if c not in REQUIRED_COLUMNS
        ]
        columns += [c for c in ADDED_COLUMNS if c not in columns]
        if any(record.spacing is not None for record in manifest.records):
            columns = [c for c in columns if c != SPACING_COLUMN]
            columns += [
                c for c in (*SPACING_AXIS_COLUMNS, *NATIVE_SPACING_COLUMNS) if c not in columns
            ]
        with (staging / MANIFEST_NAME).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        prepared = read_manifest(staging / MANIFEST_NAME, classes=classes)
        try:
            splits = split_patients(prepared, config.data.split, seed=config.seed)
            splits.save(staging / "splits.json", prepared)
        except DataError:  # too few patients: the copy is still useful, without a split
            splits = None
        report = build_report(prepared, splits)
        (staging / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (staging / "report.md").write_text(format_report(report), encoding="utf-8")
        info = {
            "source": str(manifest.path),
            "source_fingerprint": source_fingerprint(manifest.path),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **prepare_settings(config),
        }
        (staging / PREPARED_INFO_NAME).write_text(json.dumps(info, indent=2), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def build_report(manifest: Manifest, splits: Splits | None) -> dict[str, Any]:
    """Counts per class, site and split; filled caliper pixels; inter-annotator agreement.

    ``splits`` may be ``None`` (too few patients to split): the report then has no splits.
    """

    records = manifest.records
    indices = splits.indices(manifest) if splits is not None else {}

    def counts(subset: Sequence[Record]) -> dict[str, int]:
        return {
            "images": len(subset),
            "patients": len({r.patient_id for r in subset}),
            "preterm": sum(r.label == 1 for r in subset),
            "control": sum(r.label == 0 for r in subset),
            "unknown_label": sum(r.label is None for r in subset),
            "with_mask": sum(r.mask is not None for r in subset),
        }

    sites = sorted({r.extra.get("site") or "" for r in records} - {""})
    filled = np.array([int(r.extra.get("filled_pixels") or 0) for r in records])
    agreement = np.array([float(r.extra.get("inter_annotator_iou") or "nan") for r in records])
    rated = ~np.isnan(agreement)
    worst = sorted(
        (float(agreement[i]), str(records[i].extra.get("source_image")))
        for i in np.flatnonzero(rated)
    )[:5]
    return {
        "total": counts(records),
        "splits": {
            name: counts([records[i] for i in positions]) for name, positions in indices.items()
        },
        "sites": {
            site: counts([r for r in records if r.extra.get("site") == site]) for site in sites
        },
        "mask_source": {
            kind: sum(r.extra.get("mask_source") == kind for r in records)
            for kind in ("file", "bezier", "none")
        },
        "calipers": {
            "images_with_marks": int((filled > 0).sum()),
            "filled_pixels_total": int(filled.sum()),
            "filled_pixels_mean_per_marked_image": (
                float(filled[filled > 0].mean()) if (filled > 0).any() else 0.0
            ),
            "filled_pixels_max": int(filled.max()) if len(filled) else 0,
        },
        "inter_annotator_iou": {
            "images": int(rated.sum()),
            "mean": float(agreement[rated].mean()) if rated.any() else None,
            "min": float(agreement[rated].min()) if rated.any() else None,
            "lowest": [{"image": image, "iou": round(iou, 4)} for iou, image in worst],
        },
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown tables, for people."""
    lines = ["# Prepared data set", ""]
    header = "| set | images | patients | preterm | control | unknown label | with mask |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"

    def table(title: str, groups: dict[str, dict[str, int]]) -> None:
        lines.extend([f"## {title}", "", header, rule])
        for name, c in groups.items():
            lines.append(
                f"| {name} | {c['images']} | {c['patients']} | {c['preterm']} | "
                f"{c['control']} | {c['unknown_label']} | {c['with_mask']} |"
            )
        lines.append("")

    table("Splits", {"all": report["total"], **report["splits"]})
    if not report["splits"]:
        lines[-1:-1] = ["Too few patients for the configured split: no splits.json written."]
    if report["sites"]:
        table("Sites", report["sites"])
    sources = report["mask_source"]
    calipers = report["calipers"]
    agreement = report["inter_annotator_iou"]
    lines += [
        "## Masks and calipers",
        "",
        f"- Masks from files: {sources['file']}, from Bézier points: {sources['bezier']}, "
        f"none: {sources['none']}.",
        f"- Caliper marks filled in {calipers['images_with_marks']} images: "
        f"{calipers['filled_pixels_total']} pixels in all, "
        f"{calipers['filled_pixels_mean_per_marked_image']:.0f} per marked image on average, "
        f"{calipers['filled_pixels_max']} at most.",
    ]
    if agreement["images"]:
        lines.append(
            f"- Inter-annotator IoU over {agreement['images']} images with two or more "
            f"annotators: mean {agreement['mean']:.3f}, lowest {agreement['min']:.3f}."
        )
        lines += ["", "| lowest agreement | IoU |", "|---|---:|"]
        lines += [f"| {w['image']} | {w['iou']:.3f} |" for w in agreement["lowest"]]
    else:
        lines.append("- No image has two or more annotators.")
    return "\n".join(lines) + "\n"


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise DataError(f"{path}: could not encode the prepared image as PNG")
    data.tofile(str(path))


def _output_names(records: Sequence[Record]) -> list[str]:
    """``00001-<stem>.png`` per record: unique, ordered, readable (non-ASCII kept).

    Only the file name's stem is used, so a manifest path like ``../../x.png`` or ``/abs/x.png``
    is read where it points but its prepared copy is still written inside the output folder.
    """
    width = max(5, len(str(len(records))))
    names = []
    for position, record in enumerate(records, start=1):
        stem = re.sub(r"[\\/:*?\"<>|\s]+", "_", record.image.stem).strip("_") or "image"
        names.append(f"{position:0{width}d}-{stem[:80]}.png")
    return names


def _source_columns(manifest: Manifest) -> list[str]:
    with manifest.path.open(newline="", encoding="utf-8-sig") as handle:
        return [(name or "").strip() for name in csv.DictReader(handle).fieldnames or []]


def _output_row(
    manifest: Manifest,
    record: Record,
    row: PreparedRow,
    image_name: str,
    mask_name: str,
    native_name: str = "",
) -> dict[str, str]:
    values = dict(record.extra)
    annotations = parse_annotations(record.extra.get("bezier"))
    if annotations:  # control points follow the resize
        scale, offset = np.asarray(row.scale), np.asarray(row.offset)
        values["bezier"] = ";".join(
            ("" if name is None else f"{name}: ") + bezier.format_points(p * scale + offset)
            for name, p in annotations
        )
    try:
        source_image = str(record.image.relative_to(manifest.root))
    except ValueError:
        source_image = str(record.image)
    values.update(
        {
            "image": image_name,
            "patient_id": record.patient_id,
            "label": "" if record.label is None else str(record.label),
            "mask": mask_name,
            "source_image": source_image,
            "source_row": str(record.row),
            "source_size": f"{row.source_size[1]}x{row.source_size[0]}",
            "native_mask": native_name,
            "mask_source": row.mask_source,
            "annotators": str(row.annotators),
            "inter_annotator_iou": (
                "" if math.isnan(row.inter_annotator_iou) else f"{row.inter_annotator_iou:.4f}"
            ),
            "filled_pixels": str(row.filled_pixels),
        }
    )
    if record.spacing is not None:  # the scan's spacing, and the prepared image's
        (dy, dx), (scale_x, scale_y) = record.spacing, row.scale
        values.pop(SPACING_COLUMN, None)
        values.update(zip(NATIVE_SPACING_COLUMNS, (f"{dy:.9g}", f"{dx:.9g}"), strict=True))
        values.update(
            zip(SPACING_AXIS_COLUMNS, (f"{dy / scale_y:.9g}", f"{dx / scale_x:.9g}"), strict=True)
        )
    return values
