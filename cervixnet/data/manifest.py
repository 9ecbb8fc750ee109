"""The data set format: a folder with a ``manifest.csv``, one row per image.

Required columns: ``image`` (path relative to the manifest), ``patient_id``, ``label``
(``1`` preterm, ``0`` control, empty when unknown) and ``mask`` (path to a binary mask,
non-zero = cervix; may be empty for an image without an outline). Extra columns are kept in
:attr:`Record.extra` and otherwise ignored. See ``docs/data-format.md``.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from cervixnet.errors import DataError

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("image", "patient_id", "label", "mask")


@dataclasses.dataclass(frozen=True)
class Record:
    """One manifest row, with paths resolved against the manifest's folder.

    Attributes:
        row: 1-based row number in the file, counting the header as row 1.
        image: absolute path of the image.
        patient_id: the patient (pregnancy) the image belongs to.
        label: 1 preterm, 0 control, ``None`` unknown.
        mask: absolute path of the mask, ``None`` when the row has none.
        extra: the row's other columns, as text.
    """

    row: int
    image: Path
    patient_id: str
    label: int | None
    mask: Path | None
    extra: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its path and its records in file order."""

    path: Path
    records: tuple[Record, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def column(self, name: str) -> list[str | None]:
        """Values of an extra column per record (``None`` where missing or empty)."""
        return [r.extra.get(name) or None for r in self.records]


def resolve_manifest_path(path: str | Path) -> Path:
    """Accepts a data folder (containing ``manifest.csv``) or the manifest file itself."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / MANIFEST_NAME
        if not candidate.is_file():
            raise DataError(f"{path}: no {MANIFEST_NAME} in this folder")
    elif not candidate.is_file():
        raise DataError(f"{path}: no such data folder or manifest file")
    return candidate


def read_manifest(path: str | Path, check_files: bool = True) -> Manifest:
    """Reads and validates a manifest.

    Args:
        path: a data folder or its ``manifest.csv``.
        check_files: also check that every referenced image and mask file exists.

    Raises:
        DataError: naming the file, row and column of the first problem found.
    """
    manifest_path = resolve_manifest_path(path).resolve()
    root = manifest_path.parent
    try:
        with manifest_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DataError(
                    f"{manifest_path}: missing required column(s) {', '.join(missing)}. "
                    f"Expected columns {', '.join(REQUIRED_COLUMNS)}; received: {', '.join(header)}"
                )
            records = [
                _parse_row(manifest_path, root, row_number, row, check_files)
                for row_number, row in enumerate(reader, start=2)
            ]
    except UnicodeDecodeError as error:
        raise DataError(f"{manifest_path}: not a UTF-8 text file ({error.reason})") from None
    except csv.Error as error:
        raise DataError(f"{manifest_path}: not a valid CSV file ({error})") from None
    if not records:
        raise DataError(f"{manifest_path}: the manifest has no rows")
    _check_one_label_per_patient(manifest_path, records)
    return Manifest(path=manifest_path, records=tuple(records))


def _parse_row(
    manifest_path: Path, root: Path, row_number: int, row: dict, check_files: bool
) -> Record:
    def fail(column: str, reason: str) -> DataError:
        return DataError(f"{manifest_path}, row {row_number}, column '{column}': {reason}")

    if None in row:  # more cells than header columns
        raise fail("(extra cells)", f"the row has more cells than the header: {row[None]!r}")
    values = {k: (v or "").strip() for k, v in row.items()}

    image_text = values["image"]
    if not image_text:
        raise fail("image", "empty; every row needs an image path")
    image = _resolve(root, image_text)
    if check_files and not image.is_file():
        raise fail("image", f"file not found: {image_text}")

    patient_id = values["patient_id"]
    if not patient_id:
        raise fail("patient_id", "empty; every row needs a patient id")

    label_text = values["label"]
    if label_text in ("", "nan", "NaN", "NA"):
        label = None
    elif label_text in ("0", "1", "0.0", "1.0"):
        label = int(float(label_text))
    else:
        raise fail("label", f"expected 1 (preterm), 0 (control) or empty. Received: {label_text!r}")

    mask_text = values["mask"]
    mask = _resolve(root, mask_text) if mask_text else None
    if check_files and mask is not None and not mask.is_file():
        raise fail("mask", f"file not found: {mask_text}")

    extra = {k: v for k, v in values.items() if k not in REQUIRED_COLUMNS}
    return Record(row_number, image, patient_id, label, mask, extra)


def _resolve(root: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else root / path


def _check_one_label_per_patient(manifest_path: Path, records: list[Record]) -> None:
    first_seen: dict[str, Record] = {}
    for record in records:
        if record.label is None:
            continue
        earlier = first_seen.setdefault(record.patient_id, record)
        if earlier.label != record.label:
            raise DataError(
                f"{manifest_path}, row {record.row}, column 'label': patient "
                f"'{record.patient_id}' has label {record.label} here but {earlier.label} "
                f"in row {earlier.row}; one pregnancy has one outcome"
            )
