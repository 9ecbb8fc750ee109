"""A folder of ultrasound DICOM files into a cervixnet data set, with no identity in it.

:func:`import_dicom` reads every DICOM file under a folder (pydicom) and writes a new data set:
each frame as a PNG as the scanner showed it (grey stays grey; YBR, RGB and palette images
become colour), and a ``manifest.csv`` whose ``patient_id`` is a pseudonym, the keyed hash of
the DICOM PatientID (:func:`pseudonym`). No header value is copied: the manifest holds the
pseudonym, the pixel spacing, the file's path relative to the source folder, the frame number
and time, and the label and mask the caller supplies. ``import_report.json`` and
``import_report.md`` list the tags read, the counts, and every file that failed with its
reason::

    result = import_dicom("exports/", "data/clinic", salt_file="~/cervixnet.salt")
    print(result.report["imported_frames"], [f.file for f in result.failures])

The data set is built in a hidden folder beside ``out_dir`` and renamed into place at the end:
a failed import leaves nothing behind, and the source folder is only read.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import hmac
import logging
import math
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cervixnet.data.dicom import (
    DicomError,
    DicomSpacing,
    dicom_frames,
    dicom_spacing,
    dicom_text,
    is_dicom,
    read_dicom,
    tag_name,
)
from cervixnet.data.manifest import (
    MANIFEST_NAME,
    SPACING_AXIS_COLUMNS,
    SPACING_COLUMN,
)
from cervixnet.errors import ConfigError, DataError, check_output_folder
from cervixnet.fileio import atomic_write_json, atomic_write_text

__all__ = [
    "ImportFailure",
    "ImportResult",
    "format_report",
    "import_dicom",
    "pseudonym",
    "read_outcomes",
    "read_salt",
]

REPORT_JSON = "import_report.json"
REPORT_MD = "import_report.md"
PSEUDONYM_LENGTH = 16  # hex characters of the HMAC-SHA256 kept: 64 bits
SALT_MIN_LENGTH = 16  # characters; a new salt file holds 64 (secrets.token_hex(32))
OUTCOME_KEYS = ("patient_id", "accession_number")
WITHOUT_SPACING = ("keep", "omit")  # what becomes of a scan without a pixel spacing

# What is read from each file, and why. Nothing else is looked at, and nothing is copied.
TAGS_READ: tuple[tuple[str, str], ...] = (
    ("PatientID", "hashed with the salt into the pseudonym patient_id"),
    ("StudyInstanceUID", "hashed instead, when a file has no PatientID"),
    ("AccessionNumber", "with --labels keyed by accession_number: to find the outcome row"),
    ("SpecificCharacterSet", "to decode the identifiers above"),
    ("TransferSyntaxUID", "to decode the pixels"),
    ("PixelData", "the image"),
    ("Rows", "image layout"),
    ("Columns", "image layout"),
    ("SamplesPerPixel", "image layout"),
    ("PhotometricInterpretation", "grey, RGB, YBR or palette"),
    ("PlanarConfiguration", "image layout"),
    ("BitsAllocated", "only 8-bit images"),
    ("BitsStored", "image layout"),
    ("HighBit", "image layout"),
    ("PixelRepresentation", "only unsigned images"),
    ("RedPaletteColorLookupTableDescriptor", "palette images"),
    ("RedPaletteColorLookupTableData", "palette images (green and blue alike)"),
    ("NumberOfFrames", "frames of a cine loop"),
    ("FrameTime", "frame_time_ms"),
    ("FrameTimeVector", "frame_time_ms"),
    ("SequenceOfUltrasoundRegions", "the tissue region: pixel spacing and --crop box"),
    ("RegionSpatialFormat", "which region is the 2D image"),
    ("RegionDataType", "which region is tissue"),
    ("RegionLocationMinX0", "the region's box (MinY0, MaxX1, MaxY1 alike)"),
    ("PhysicalUnitsXDirection", "the region's units (Y alike)"),
    ("PhysicalDeltaX", "the pixel spacing (Y alike)"),
    ("PixelSpacing", "the pixel spacing, when there are no ultrasound regions"),
)


@dataclasses.dataclass(frozen=True)
class ImportFailure:
    """A DICOM file that was not imported.

    Attributes:
        file: its path relative to the source folder (``/`` separated).
        reason: why, one line, with the tag where it is about a tag; never a header value.
    """

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What :func:`import_dicom` wrote.

    Attributes:
        manifest: the data set's ``manifest.csv``.
        report: the contents of ``import_report.json``.
        failures: the files not imported, in path order.
        salt_created: whether the salt file was created by this import.
    """

    manifest: Path
    report: dict[str, Any]
    failures: tuple[ImportFailure, ...]
    salt_created: bool


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A label from the outcomes file and the row (counting the header as row 1) it is on."""

    label: int | None
    row: int


@dataclasses.dataclass
class _Scan:
    """One DICOM file, read: its identity stays in memory and never reaches a file."""

    file: str
    identifier: str
    identifier_source: str
    accession: str | None
    frame_numbers: list[int]  # from 1
    frame_times: list[float | None]  # ms from the first frame, per imported frame
    spacing: DicomSpacing | None
    shape: tuple[int, int]  # the image's rows and columns, before any crop
    crop_box: tuple[int, int, int, int] | None
    has_mask: bool = False


# ----------------------------------------------------------------------------------------
# The salt and the pseudonym.


def read_salt(path: str | Path, create: bool = True) -> tuple[bytes, bool]:
    """The salt kept in ``path`` (the file's text, stripped) and whether it was just created.

    A missing file is created (when ``create``) with 64 random hex characters
    (``secrets.token_hex(32)``), readable by its owner only. Keep it: the same salt gives the
    same pseudonyms in later imports, and without it nobody can link a pseudonym to a
    patient by hashing candidate IDs.

    Raises:
        ConfigError: the file cannot be read or created, is empty, or holds fewer than 16
            characters.
    """
    path = Path(path).expanduser()
    if not path.exists() and create:
        try:
            atomic_write_text(path, secrets.token_hex(32) + "\n")  # mode 0600 (mkstemp)
        except OSError as error:
            raise ConfigError(
                f"--salt-file {path}: cannot create it ({error.strerror or error})"
            ) from None
        created = True
    else:
        created = False
    try:
        salt = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not a UTF-8 text file"
        raise ConfigError(f"--salt-file {path}: cannot be read ({reason})") from None
    if len(salt) < SALT_MIN_LENGTH:
        raise ConfigError(
            f"--salt-file {path}: a salt must hold at least {SALT_MIN_LENGTH} characters, "
            f"or pseudonyms can be reversed by trying IDs. Received: {len(salt)} characters "
            "(give the path of a file that does not exist yet, and one is created)"
        )
    return salt.encode("utf-8"), created


def pseudonym(identifier: str, salt: bytes) -> str:
    """The pseudonym of a patient: HMAC-SHA256 of ``identifier`` (UTF-8) keyed by ``salt``,
    its first 16 hex characters. The same identifier and salt always give the same one."""
    digest = hmac.new(salt, identifier.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_LENGTH]


# ----------------------------------------------------------------------------------------
# The outcomes file.


def read_outcomes(path: str | Path) -> dict[str, dict[str, Outcome]]:
    """The labels of an outcomes CSV, by key: ``{"patient_id": {...}, "accession_number":
    {...}}``, each mapping the DICOM PatientID or AccessionNumber to its :class:`Outcome`.

    The file has a ``label`` column (1 preterm, 0 control, empty unknown) and a
    ``patient_id`` or an ``accession_number`` column, or both (a row then needs one of them).

    Raises:
        DataError: naming the file, the row (the header is row 1) and the column: a missing
            column, a row without a key, a label other than 0, 1 or empty, the same key twice
            with different labels. Key values are never shown.
    """
    path = Path(path)
    by_key: dict[str, dict[str, Outcome]] = {key: {} for key in OUTCOME_KEYS}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [(name or "").strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            keys = [key for key in OUTCOME_KEYS if key in header]
            if "label" not in header or not keys:
                raise DataError(
                    f"{path}, row 1: expected the columns label and patient_id or "
                    f"accession_number (or both). Received: {', '.join(map(repr, header))}"
                )
            for row in reader:
                _outcome_row(path, reader.line_num, row, keys, by_key)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as error:
        raise DataError(f"{path}: not a valid CSV file ({error})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    return by_key


def _outcome_row(
    path: Path, line: int, row: dict, keys: list[str], by_key: dict[str, dict[str, Outcome]]
) -> None:
    if None in row:
        raise DataError(f"{path}, row {line}: the row has more cells than the header")
    values = {k: (v or "").strip() for k, v in row.items()}
    text = values["label"]
    if text in ("0", "1", "0.0", "1.0"):
        label = int(float(text))
    elif not text:
        label = None
    else:
        raise DataError(
            f"{path}, row {line}, column 'label': expected 1 (preterm), 0 (control) or empty "
            f"(unknown). Received: {text!r}"
        )
    given = [key for key in keys if values.get(key)]
    if not given:
        raise DataError(
            f"{path}, row {line}, column {keys[0]!r}: empty; each row needs {' or '.join(keys)}"
        )
    for key in given:
        earlier = by_key[key].setdefault(values[key], Outcome(label, line))
        if earlier.label != label:
            raise DataError(
                f"{path}, row {line}, column 'label': the same {key} as row {earlier.row} "
                f"with another label ({label} here, {earlier.label} there)"
            )


# ----------------------------------------------------------------------------------------
# Reading one file.


def _mask_name(relative: str) -> str:
    """The mask of ``a/b.dcm`` is ``a/b.png``; of ``a/IM0001`` or ``a/1.2.3``, the name plus
    ``.png`` (a UID's last part is not a suffix)."""
    path = Path(relative)
    name = path.with_suffix(".png") if path.suffix.lower() == ".dcm" else Path(f"{relative}.png")
    return name.as_posix()


def _frame_times(dataset: Any, count: int) -> list[float | None]:
    """Milliseconds from the first frame: FrameTimeVector (0018,1065) summed, else
    FrameTime (0018,1063) times the frame's index; None where the file gives neither."""
    with contextlib.suppress(TypeError, ValueError):
        vector = dataset.get("FrameTimeVector")
        if vector is not None and len(vector) == count:
            times = np.cumsum([float(v) for v in vector]) - float(vector[0])
            if all(math.isfinite(t) for t in times):
                return [float(t) for t in times]
    with contextlib.suppress(TypeError, ValueError):
        step = float(dataset.get("FrameTime"))
        if math.isfinite(step) and step > 0:
            return [k * step for k in range(count)]
    return [None] * count


def _read_scan(
    path: Path, relative: str, frames: str | int, crop: bool, accession: bool
) -> tuple[_Scan, list[np.ndarray]]:
    """The file's identity and layout, and the chosen frames' pixels (cropped with ``crop``).

    Raises:
        DicomError: naming the file (relative to the source) and the tag.
    """
    dataset = read_dicom(path)
    identifier = dicom_text(dataset, "PatientID", relative)
    source = "PatientID"
    if identifier is None:
        identifier, source = dicom_text(dataset, "StudyInstanceUID", relative), "StudyInstanceUID"
    if identifier is None:
        raise DicomError(
            f"{relative}: no {tag_name('PatientID')} and no {tag_name('StudyInstanceUID')}: "
            "cannot tell whose scan it is"
        )
    accession_number = dicom_text(dataset, "AccessionNumber", relative) if accession else None
    spacing = dicom_spacing(dataset, relative)
    pixels = dicom_frames(dataset, relative, frames)
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    numbers = (
        list(range(1, count + 1)) if frames == "all" else [1 if frames == "first" else int(frames)]
    )
    times = _frame_times(dataset, count) if count > 1 else [None]
    box = spacing.box if crop and spacing is not None else None
    if box is not None:
        x0, y0, x1, y1 = box
        pixels = [np.ascontiguousarray(p[y0 : y1 + 1, x0 : x1 + 1]) for p in pixels]
    scan = _Scan(
        file=relative,
        identifier=identifier,
        identifier_source=source,
        accession=accession_number,
        frame_numbers=numbers,
        frame_times=[times[n - 1] for n in numbers],
        spacing=spacing,
        shape=(int(dataset.Rows), int(dataset.Columns)),
        crop_box=box,
    )
    return scan, pixels


def _read_mask(masks: Path, scan: _Scan) -> np.ndarray | None:
    """The scan's mask from the ``--masks`` folder (0/1, cropped as the scan), or None."""
    from cervixnet.data import imagefile

    name = _mask_name(scan.file)
    path = masks / name
    if not path.is_file():
        return None
    try:
        values = imagefile.mask_values(imagefile.read_image(path))
    except imagefile.ImageFileError as error:
        raise DicomError(f"{scan.file}: its mask {name} (--masks): {error.reason}") from None
    problem = imagefile.mask_problem(values)
    if problem:
        raise DicomError(f"{scan.file}: its mask {name} (--masks): {problem}")
    if values.shape[:2] != scan.shape:
        raise DicomError(
            f"{scan.file}: its mask {name} (--masks) is {values.shape[1]}x{values.shape[0]} "
            f"pixels but the scan is {scan.shape[1]}x{scan.shape[0]}"
        )
    if scan.crop_box is not None:
        x0, y0, x1, y1 = scan.crop_box
        values = values[y0 : y1 + 1, x0 : x1 + 1]
    return (values > 0).astype(np.uint8)


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom's warnings and log lines can quote header values (an invalid date, a name too
    long): none of them reaches the user's terminal or logs during an import."""
    logger = logging.getLogger("pydicom")
    disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = disabled


# ----------------------------------------------------------------------------------------
# The import.


def _check_folders(source: Path, out_dir: Path, salt_file: Path, masks: Path | None) -> None:
    if not source.is_dir():
        raise DataError(f"{source}: no such folder of DICOM files")
    check_output_folder(out_dir)
    src, out, salt = source.resolve(), out_dir.resolve(), salt_file.resolve()
    if out.is_relative_to(src) or src.is_relative_to(out):
        raise ConfigError(
            f"--out {out_dir}: lies inside the source folder {source} (or holds it); the "
            "source is only read, so write the data set elsewhere"
        )
    if salt.is_relative_to(out) or salt.is_relative_to(src):
        raise ConfigError(
            f"--salt-file {salt_file}: keep the salt apart from the data set and the source "
            "folder; anyone holding it with the data set can test patient IDs against the "
            "pseudonyms"
        )
    if masks is not None and not masks.is_dir():
        raise DataError(f"--masks {masks}: no such folder")


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Grey as grey, RGB as colour; OpenCV writes no text chunks."""
    import cv2

    image = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"{path.name}: OpenCV could not encode the frame as PNG")
    path.write_bytes(encoded.tobytes())


def import_dicom(
    source: str | Path,
    out_dir: str | Path,
    salt_file: str | Path,
    *,
    frames: str | int = "first",
    crop: bool = False,
    outcomes: str | Path | None = None,
    masks: str | Path | None = None,
    strict: bool = False,
    without_spacing: str = "keep",
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Imports every DICOM file under ``source`` into a new data set at ``out_dir``.

    A file is taken as DICOM when :func:`~cervixnet.data.dicom.is_dicom` says so (a ``.dcm``
    name, or ``DICM`` after the preamble); other files (and ``DICOMDIR``) are skipped and
    counted. A DICOM file that cannot be used is listed in :attr:`ImportResult.failures` with
    its reason, and the others go on.

    Args:
        source: the folder, read recursively and never modified.
        out_dir: a new or empty folder for the data set.
        salt_file: the salt of the pseudonyms (:func:`read_salt`; created when missing). It
            must lie outside ``source`` and ``out_dir``.
        frames: ``"first"`` (default), ``"all"`` or a frame number from 1.
        crop: cut each frame to its tissue region's box (clamped to the image); the pixel
            spacing is unchanged. Files without a region are kept whole.
        outcomes: a CSV of labels keyed by the DICOM PatientID or AccessionNumber
            (:func:`read_outcomes`); without it every label is empty (unknown).
        masks: a folder of binary mask PNGs: the mask of ``a/b.dcm`` is ``masks/a/b.png``
            (of a file without the ``.dcm`` suffix, its name plus ``.png``), the size of the
            scan; it goes with the first frame.
        strict: refuse the whole import (nothing written) if any DICOM file fails.
        without_spacing: ``"keep"`` (default) imports a scan without a pixel spacing with an
            empty one; ``"omit"`` leaves it out (listed in the report), so that a folder of
            scans with and without spacing gives a data set in mm that validates.
        progress: called with 1 after each file under ``source``.

    Returns:
        The manifest, the report (as written to ``import_report.json``), the failures and
        whether the salt file was created.

    Raises:
        DataError: the source or masks folder is missing, no file could be imported, an
            outcomes row is bad, two scans of one patient get different labels, or (with
            ``strict``) a file failed.
        ConfigError: ``out_dir`` is not new or empty, or a folder lies inside another it must
            not; the salt file is unusable.
    """
    if without_spacing not in WITHOUT_SPACING:
        raise ConfigError(
            f"--without-spacing must be one of {', '.join(WITHOUT_SPACING)}. Received: "
            f"{without_spacing!r}"
        )
    source, out_dir = Path(source).expanduser(), Path(out_dir).expanduser()
    salt_path = Path(salt_file).expanduser()
    masks_dir = Path(masks).expanduser() if masks is not None else None
    _check_folders(source, out_dir, salt_path, masks_dir)
    table = read_outcomes(outcomes) if outcomes is not None else None
    # A salt file already there is checked before any file is read; a new one is made only
    # once there is something to import.
    salt = read_salt(salt_path, create=False)[0] if salt_path.exists() else None

    files = sorted(
        (p for p in source.rglob("*") if p.is_file()), key=lambda p: p.relative_to(source).parts
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-importing-", dir=out_dir.parent))
    try:
        (staging / "images").mkdir()
        scans, failures, skipped, omitted = _read_all(
            source,
            files,
            staging,
            frames=frames,
            crop=crop,
            accession=bool(table and table["accession_number"]),
            masks=masks_dir,
            omit_without_spacing=without_spacing == "omit",
            progress=progress,
        )
        if strict and failures:
            raise DicomError(
                f"{len(failures)} DICOM file(s) under {source} could not be imported "
                f"(--strict: nothing written); the first: {failures[0]}"
            )
        if not scans:
            first = f"; the first failure: {failures[0]}" if failures else ""
            left_out = f", {len(omitted)} left out without spacing" if omitted else ""
            raise DataError(
                f"{source}: no DICOM image could be imported ({len(failures)} failed, "
                f"{len(skipped)} other file(s) skipped{left_out}){first}"
            )
        salt_created = salt is None
        if salt is None:
            salt, _ = read_salt(salt_path)
        rows, matched = _rows(scans, salt, table, outcomes, crop)
        report = _report(scans, rows, failures, skipped, frames=frames, crop=crop)
        report["files_left_out_without_spacing"] = omitted
        if table is not None:
            given = {o.row for keyed in table.values() for o in keyed.values()}
            report["outcome_rows_without_a_scan"] = len(given - matched)
        _write_manifest(staging / MANIFEST_NAME, rows)
        atomic_write_json(staging / REPORT_JSON, report)
        atomic_write_text(staging / REPORT_MD, format_report(report))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(out_dir / MANIFEST_NAME, report, tuple(failures), salt_created)


def _read_all(
    source: Path,
    files: list[Path],
    staging: Path,
    *,
    frames: str | int,
    crop: bool,
    accession: bool,
    masks: Path | None,
    omit_without_spacing: bool,
    progress: Callable[[int], None] | None,
) -> tuple[list[_Scan], list[ImportFailure], list[str], list[str]]:
    """Reads each file and writes its frames (and mask) into ``staging`` at once, so that
    only one file's pixels are held at a time. Returns the scans written, the failures, the
    files that are not DICOM, and the scans left out for want of a pixel spacing (with
    ``omit_without_spacing``)."""
    scans: list[_Scan] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    omitted: list[str] = []
    with _quiet_pydicom():
        for path in files:
            relative = path.relative_to(source).as_posix()
            if path.name.upper() == "DICOMDIR" or not is_dicom(path):
                skipped.append(relative)
            else:
                try:
                    scan, pixels = _read_scan(path, relative, frames, crop, accession)
                    mask = None
                    if masks is not None and scan.frame_numbers[0] == 1:
                        mask = _read_mask(masks, scan)
                except DicomError as error:
                    failures.append(ImportFailure(relative, _reason(error, relative)))
                except Exception as error:  # a malformed file pydicom trips over
                    failures.append(
                        ImportFailure(relative, f"cannot be read ({type(error).__name__})")
                    )
                else:
                    if omit_without_spacing and scan.spacing is None:
                        omitted.append(relative)  # nothing of it is written
                    else:
                        _write_scan(staging, len(scans) + 1, scan, pixels, mask)
                        scans.append(scan)
            if progress is not None:
                progress(1)
    return scans, failures, skipped, omitted


def _write_scan(
    staging: Path, index: int, scan: _Scan, pixels: list[np.ndarray], mask: np.ndarray | None
) -> None:
    """Writes the scan's frames as ``images/<index:05d>-<frame>.png`` and its mask, if any."""
    for number, frame in zip(scan.frame_numbers, pixels, strict=True):
        _write_png(staging / "images" / f"{index:05d}-{number}.png", frame)
    if mask is not None:
        (staging / "masks").mkdir(exist_ok=True)
        _write_png(staging / "masks" / f"{index:05d}-1.png", mask * np.uint8(255))
        scan.has_mask = True


def _reason(error: DicomError, relative: str) -> str:
    """The message without the file's name, which the failure carries itself."""
    text = str(error)
    return text[len(relative) + 2 :] if text.startswith(f"{relative}: ") else text


def _spacing_columns(scans: list[_Scan]) -> tuple[str, ...]:
    """``pixel_spacing_mm`` when every pixel with a spacing is square, else the two axes."""
    spaced = [s.spacing for s in scans if s.spacing is not None]
    if all(math.isclose(s.dy, s.dx, rel_tol=1e-9) for s in spaced):
        return (SPACING_COLUMN,)
    return SPACING_AXIS_COLUMNS


def _rows(
    scans: list[_Scan],
    salt: bytes,
    table: dict[str, dict[str, Outcome]] | None,
    outcomes: str | Path | None,
    crop: bool,
) -> tuple[list[dict[str, str]], set[int]]:
    """The manifest's rows, one per frame, and the outcome rows used.

    Raises:
        DataError: two scans of one patient get different labels from the outcomes file.
    """
    spacing_columns = _spacing_columns(scans)
    timed = any(t is not None for s in scans for t in s.frame_times)
    labelled: dict[str, tuple[int, str, int]] = {}  # pseudonym -> (label, file, outcome row)
    matched: set[int] = set()
    rows = []
    for index, scan in enumerate(scans, start=1):
        patient = pseudonym(scan.identifier, salt)
        outcome = None
        if table is not None:
            if scan.identifier_source == "PatientID":
                outcome = table["patient_id"].get(scan.identifier)
            if outcome is None and scan.accession is not None:
                outcome = table["accession_number"].get(scan.accession)
        label = outcome.label if outcome is not None else None
        if outcome is not None:
            matched.add(outcome.row)
        if outcome is not None and label is not None:
            first = labelled.setdefault(patient, (label, scan.file, outcome.row))
            if first[0] != label:
                raise DataError(
                    f"{outcomes}, row {outcome.row}, column 'label': gives {scan.file} label "
                    f"{label}, but row {first[2]} gives {first[1]}, a scan of the same patient, "
                    f"label {first[0]}; one pregnancy has one outcome"
                )
        for number, time in zip(scan.frame_numbers, scan.frame_times, strict=True):
            name = f"{index:05d}-{number}.png"
            row = {
                "image": f"images/{name}",
                "patient_id": patient,
                "label": "" if label is None else str(label),
                "mask": f"masks/{name}" if scan.has_mask and number == 1 else "",
            }
            spacing = scan.spacing
            if spacing_columns == (SPACING_COLUMN,):
                row[SPACING_COLUMN] = "" if spacing is None else _number(spacing.dy)
            else:
                row[SPACING_AXIS_COLUMNS[0]] = "" if spacing is None else _number(spacing.dy)
                row[SPACING_AXIS_COLUMNS[1]] = "" if spacing is None else _number(spacing.dx)
            row["spacing_source"] = "" if spacing is None else spacing.source
            row["source_file"] = scan.file
            row["frame"] = str(number)
            if timed:
                row["frame_time_ms"] = "" if time is None else f"{time:.3f}"
            if crop:
                row["crop_box"] = "" if scan.crop_box is None else ",".join(map(str, scan.crop_box))
            rows.append(row)
    return rows, matched


def _number(value: float) -> str:
    return f"{value:.6g}"


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _report(
    scans: list[_Scan],
    rows: list[dict[str, str]],
    failures: list[ImportFailure],
    skipped: list[str],
    *,
    frames: str | int,
    crop: bool,
) -> dict[str, Any]:
    """The contents of ``import_report.json``: counts, failures, the tags read."""
    import pydicom
    from pydicom.datadict import tag_for_keyword

    spacing = {"ultrasound region": 0, "PixelSpacing": 0, "none": 0}
    for scan in scans:
        spacing[scan.spacing.source if scan.spacing is not None else "none"] += 1
    by_study = [s.file for s in scans if s.identifier_source == "StudyInstanceUID"]
    unspaced = [s.file for s in scans if s.spacing is None]
    labels = [row["label"] for row in rows]
    notes = []
    if unspaced and len(unspaced) < len(scans):
        notes.append(
            f"{len(unspaced)} file(s) have no pixel spacing while {len(scans) - len(unspaced)} "
            "have one: `cervixnet data validate` refuses a data set that mixes millimetres and "
            "pixels; import again with --without-spacing omit to leave them out, or give them "
            "a spacing"
        )
    if by_study:
        notes.append(
            f"{len(by_study)} file(s) have no PatientID: their patient_id is the hash of the "
            "StudyInstanceUID, so two studies of one patient count as two patients"
        )
    notes.append(
        "The pixels are copied as the scanner showed them: calipers are filled by "
        "`cervixnet data prepare` (and `train`), but text burnt into the image (a name in the "
        "scanner's banner) stays; --crop keeps only the tissue region"
    )
    tags = []
    for keyword, use in TAGS_READ:
        tag = tag_for_keyword(keyword)
        tags.append(
            {"keyword": keyword, "tag": f"({tag >> 16:04X},{tag & 0xFFFF:04X})", "use": use}
        )
    return {
        "source_files": len(scans) + len(failures) + len(skipped),
        "dicom_files": len(scans) + len(failures),
        "imported_files": len(scans),
        "imported_frames": len(rows),
        "patients": len({row["patient_id"] for row in rows}),
        "frames": frames,
        "cropped_files": sum(s.crop_box is not None for s in scans) if crop else None,
        "spacing": spacing,
        "files_without_spacing": unspaced,
        "patient_id_from": {
            "PatientID": len(scans) - len(by_study),
            "StudyInstanceUID": len(by_study),
        },
        "files_keyed_by_study": by_study,
        "labels": {
            "preterm": labels.count("1"),
            "control": labels.count("0"),
            "unknown": labels.count(""),
        },
        "masks": sum(bool(row["mask"]) for row in rows),
        "failed": [{"file": f.file, "reason": f.reason} for f in failures],
        "skipped_not_dicom": skipped,
        "tags_read": tags,
        "header_values_copied": [],
        "privacy": (
            "No header value was copied into the data set. patient_id is the first "
            f"{PSEUDONYM_LENGTH} hex characters of HMAC-SHA256 of the PatientID (or, without "
            "one, the StudyInstanceUID), keyed by the salt kept outside the data set. Names, "
            "dates, IDs, accession numbers, UIDs and institutions are not written anywhere."
        ),
        "notes": notes,
        "pydicom": pydicom.__version__,
    }


def format_report(report: dict[str, Any], privacy: bool = True) -> str:
    """``import_report.md``: the report of :func:`import_dicom` for people; without
    ``privacy``, the counts, failures and notes only (what the command prints)."""
    spacing = report["spacing"]
    labels = report["labels"]
    lines = [
        "# DICOM import",
        "",
        f"- files under the source: {report['source_files']}: {report['dicom_files']} DICOM, "
        f"{len(report['skipped_not_dicom'])} other file(s) skipped",
        f"- imported: {report['imported_files']} file(s), {report['imported_frames']} frame(s) "
        f"(frames: {report['frames']}), {report['patients']} patient(s)",
        f"- failed: {len(report['failed'])} file(s)",
        f"- pixel spacing: {spacing['ultrasound region']} from the ultrasound region "
        f"(0018,6011), {spacing['PixelSpacing']} from PixelSpacing (0028,0030), "
        f"{spacing['none']} without",
        f"- patient_id: the keyed hash of PatientID for {report['patient_id_from']['PatientID']} "
        f"file(s), of StudyInstanceUID for {report['patient_id_from']['StudyInstanceUID']}",
        f"- labels (rows): {labels['preterm']} preterm, {labels['control']} control, "
        f"{labels['unknown']} unknown; masks: {report['masks']}",
    ]
    if report.get("cropped_files") is not None:
        lines.append(f"- cropped to the tissue region: {report['cropped_files']} file(s)")
    if report.get("outcome_rows_without_a_scan") is not None:
        lines.append(f"- outcome rows matching no scan: {report['outcome_rows_without_a_scan']}")
    if report["failed"]:
        lines += ["", "## Failed", ""]
        lines += [f"- `{f['file']}`: {f['reason']}" for f in report["failed"]]
    if report["files_without_spacing"]:
        lines += ["", "## Without pixel spacing", ""]
        lines += [f"- `{name}`" for name in report["files_without_spacing"]]
    if report.get("files_left_out_without_spacing"):
        lines += ["", "## Left out: no pixel spacing (--without-spacing omit)", ""]
        lines += [f"- `{name}`" for name in report["files_left_out_without_spacing"]]
    if report["notes"]:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in report["notes"]]
    if not privacy:
        return "\n".join(lines) + "\n"
    lines += ["", "## Privacy", "", report["privacy"], "", "Tags read (none copied):", ""]
    lines += ["| tag | keyword | use |", "|---|---|---|"]
    lines += [f"| {t['tag']} | {t['keyword']} | {t['use']} |" for t in report["tags_read"]]
    return "\n".join(lines) + "\n"
