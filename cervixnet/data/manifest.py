"""The data set format: a folder with a ``manifest.csv``, one row per image.

Required columns: ``image`` (path relative to the manifest), ``patient_id``, ``label``
(``1`` preterm, ``0`` control, empty when unknown) and ``mask`` (path to a binary mask,
non-zero = cervix; may be empty for an image without an outline). With several classes
(``data.classes``) a mask holds class ids, and ``data.mask_column`` may name another column
for the masks. Extra columns are kept in :attr:`Record.extra` and otherwise ignored. See
``docs/data-format.md``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cervixnet.errors import DataError

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("image", "patient_id", "label", "mask")
# Optional pixel spacing, mm per pixel: one column for square pixels, or one per axis.
MASK_COLUMN = "mask"
# The one class of a binary mask (``data.classes``' default).
DEFAULT_CLASSES = ("cervix",)
SPACING_COLUMN = "pixel_spacing_mm"
SPACING_AXIS_COLUMNS = ("spacing_y_mm", "spacing_x_mm")
# A prepared copy's rows: the spacing of the scan itself (of ``native_mask``), where the axis
# columns give the prepared image's.
NATIVE_SPACING_COLUMNS = ("native_spacing_y_mm", "native_spacing_x_mm")


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

    @property
    def spacing(self) -> tuple[float, float] | None:
        """The pixel spacing ``(dy, dx)`` in mm (``pixel_spacing_mm`` for both axes, or
        ``spacing_y_mm`` and ``spacing_x_mm``), or None when the row gives none. Validated
        when the manifest is read: finite and > 0."""
        y, x = (self.extra.get(c) for c in SPACING_AXIS_COLUMNS)
        if y and x:
            return float(y), float(x)
        square = self.extra.get(SPACING_COLUMN)
        return (float(square), float(square)) if square else None

    @property
    def unannotated(self) -> bool:
        """Whether the row has neither a mask, a Bézier outline nor a label: a scan that only
        semi-supervised training can learn from (``training.semi_supervised``). Such rows are
        in no split (``cervixnet.data.splits``)."""
        return self.mask is None and self.label is None and not self.extra.get("bezier")

    @property
    def native_spacing(self) -> tuple[float, float] | None:
        """The spacing ``(dy, dx)`` in mm of the scan at its own size: a prepared copy's
        ``native_spacing_y_mm`` and ``native_spacing_x_mm``, else :attr:`spacing`."""
        y, x = (self.extra.get(c) for c in NATIVE_SPACING_COLUMNS)
        return (float(y), float(x)) if y and x else self.spacing


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its path and its records in file order."""

    path: Path
    records: tuple[Record, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def source(self) -> Path:
        """The manifest a person wrote: ``path``, or the source of a prepared copy.

        Messages about the data name this file, so that a problem found in a prepared copy in
        the cache points at the user's own manifest.
        """
        try:
            info = json.loads((self.root / "prepared.json").read_text(encoding="utf-8"))
            return Path(info["source"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.path

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


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem in a manifest: where it is (file, row, column) and what is wrong."""

    manifest: Path
    row: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = str(self.manifest)
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column {_shown(self.column, quote=True)}"
        return f"{where}: {self.reason}"


def check_manifest(
    path: str | Path,
    check_files: bool = True,
    decode: bool = False,
    *,
    mask_column: str = MASK_COLUMN,
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> tuple[Path, list[Record], list[Problem]]:
    """Reads a manifest and collects every problem instead of stopping at the first.

    Args:
        path: a data folder or its ``manifest.csv``.
        check_files: check that every referenced image and mask file exists.
        decode: also decode every image and mask (OpenCV), and check that a mask has its
            image's size and that Bézier control points (a ``bezier`` column) lie inside it.
        mask_column: the column whose files are the masks (``Record.mask``); default ``mask``.
        classes: the names of the mask's classes (``data.classes``). One class: a mask is
            binary (0 and 1 or 255). Several: a mask holds class ids 0 (background) to
            ``len(classes)``, and with ``decode`` each class must appear in some mask.

    Returns:
        ``(manifest_path, records, problems)``: the rows without problems as records, and one
        :class:`Problem` per problem found, in file order.

    Raises:
        DataError: the folder or file cannot be found.
    """
    manifest_path = resolve_manifest_path(path).resolve()
    root = manifest_path.parent
    problems: list[Problem] = []
    records: list[Record] = []
    if manifest_path.stat().st_size == 0:
        problems.append(
            Problem(
                manifest_path,
                None,
                None,
                f"empty file (0 bytes); expected a header line with the columns "
                f"{', '.join(REQUIRED_COLUMNS)} and one row per image",
            )
        )
        return manifest_path, [], problems
    try:
        with manifest_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            # Spreadsheets pad names with spaces; a padded name is still the column.
            header = [(name or "").strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:
                problems.append(
                    Problem(
                        manifest_path,
                        1,
                        repeated[0],
                        f"the header names column(s) {', '.join(map(repr, repeated))} more "
                        "than once; each column must appear once",
                    )
                )
                return manifest_path, [], problems
            expected = list(dict.fromkeys((*REQUIRED_COLUMNS, mask_column)))
            missing = [c for c in expected if c not in header]
            if missing:
                problems.append(
                    Problem(
                        manifest_path,
                        None,
                        None,
                        f"missing required column(s) {', '.join(missing)}. Expected columns "
                        f"{', '.join(expected)}; received: "
                        f"{', '.join(map(_shown, header))}",
                    )
                )
                return manifest_path, [], problems
            found_ids: set[int] = set()
            for row in reader:
                # The line the row ends on: blank lines count, as in an editor or spreadsheet.
                checker = _RowChecker(
                    manifest_path, root, reader.line_num, problems, mask_column, classes
                )
                record = checker.parse(row, check_files, decode, found_ids)
                if record is not None:
                    records.append(record)
    except UnicodeDecodeError as error:
        problems.append(
            Problem(manifest_path, None, None, f"not a UTF-8 text file ({error.reason})")
        )
        return manifest_path, [], problems
    except csv.Error as error:
        problems.append(Problem(manifest_path, None, None, f"not a valid CSV file ({error})"))
        return manifest_path, [], problems
    if not records and not problems:
        problems.append(Problem(manifest_path, None, None, "the manifest has no rows"))
    if decode and len(classes) > 1 and any(r.mask is not None for r in records):
        problems.extend(_absent_classes(manifest_path, mask_column, classes, found_ids))
    problems.extend(_duplicates(manifest_path, records))
    problems.extend(_conflicting_labels(manifest_path, records))
    problems.extend(_partial_spacing(manifest_path, records))
    problems.sort(key=lambda p: p.row or 0)
    return manifest_path, records, problems


def read_manifest(
    path: str | Path,
    check_files: bool = True,
    decode: bool = False,
    *,
    mask_column: str = MASK_COLUMN,
    classes: Sequence[str] = DEFAULT_CLASSES,
) -> Manifest:
    """Reads and validates a manifest.

    Args:
        path: a data folder or its ``manifest.csv``.
        check_files: also check that every referenced image and mask file exists.
        decode: also decode every image and mask (see :func:`check_manifest`).
        mask_column: the column whose files are the masks; default ``mask``.
        classes: the names of the mask's classes (see :func:`check_manifest`).

    Raises:
        DataError: naming the file, row and column of the first problem found, and how many
            there are in all.
    """
    manifest_path, records, problems = check_manifest(
        path, check_files, decode, mask_column=mask_column, classes=classes
    )
    if problems:
        more = len(problems) - 1
        hint = (
            f" (and {more} more problem{'s' if more > 1 else ''}; "
            "`cervixnet data validate` lists them all)"
            if more
            else ""
        )
        raise DataError(f"{problems[0]}{hint}")
    return Manifest(path=manifest_path, records=tuple(records))


class _RowChecker:
    """Parses one row, recording each problem it finds."""

    def __init__(
        self,
        manifest_path: Path,
        root: Path,
        row: int,
        problems: list[Problem],
        mask_column: str = MASK_COLUMN,
        class_names: Sequence[str] = DEFAULT_CLASSES,
    ):
        self.manifest_path, self.root, self.row, self.problems = manifest_path, root, row, problems
        self.mask_column, self.class_names = mask_column, tuple(class_names)
        self.classes = len(self.class_names)
        self.failed = False

    def fail(self, column: str, reason: str) -> None:
        self.problems.append(Problem(self.manifest_path, self.row, column, reason))
        self.failed = True

    def parse(
        self, row: dict, check_files: bool, decode: bool, found_ids: set[int] | None = None
    ) -> Record | None:
        if None in row:  # more cells than header columns
            self.fail("(extra cells)", f"the row has more cells than the header: {row[None]!r}")
            return None
        values = {k: (v or "").strip() for k, v in row.items()}

        image_text = values["image"]
        image = _resolve(self.root, image_text) if image_text else None
        if image is None:
            self.fail("image", "empty; every row needs an image path")
        elif check_files:
            self._check_file("image", image, image_text)

        patient_id = values["patient_id"]
        if not patient_id:
            self.fail("patient_id", "empty; every row needs a patient id")

        label_text, label = values["label"], None
        if label_text in ("0", "1", "0.0", "1.0"):
            label = int(float(label_text))
        elif label_text:
            hint = " (leave the cell empty for an unknown label)" if _is_nan(label_text) else ""
            self.fail(
                "label",
                f"expected 1 (preterm), 0 (control) or empty (unknown). Received: "
                f"{label_text!r}{hint}",
            )

        mask_text = values[self.mask_column]
        mask = _resolve(self.root, mask_text) if mask_text else None
        if check_files and mask is not None:
            self._check_file(self.mask_column, mask, mask_text)

        for column in (SPACING_COLUMN, *SPACING_AXIS_COLUMNS):
            text = values.get(column, "")
            if text and not _positive_finite(text):
                self.fail(
                    column,
                    f"expected the pixel spacing, a finite number of mm per pixel > 0, or an "
                    f"empty cell. Received: {text!r}",
                )
        if bool(values.get(SPACING_AXIS_COLUMNS[0])) != bool(values.get(SPACING_AXIS_COLUMNS[1])):
            given, other = (
                SPACING_AXIS_COLUMNS if values.get(SPACING_AXIS_COLUMNS[0])
                else SPACING_AXIS_COLUMNS[::-1]
            )  # fmt: skip
            self.fail(other, f"empty, but {given} is given: a pixel has a spacing on both axes")

        if decode and not self.failed:
            self._decode(image, image_text, mask, mask_text, values.get("bezier", ""), found_ids)
        if self.failed:
            return None
        extra = {k: v for k, v in values.items() if k not in REQUIRED_COLUMNS}
        return Record(self.row, image, patient_id, label, mask, extra)

    def _check_file(self, column: str, path: Path, text: str) -> None:
        if path.is_dir():
            self.fail(column, f"a folder, not an image file: {_shown(text)}")
        elif not path.is_file():
            self.fail(column, f"file not found: {_shown(text)}")

    def _decode(
        self,
        image: Path,
        image_text: str,
        mask: Path | None,
        mask_text: str,
        bezier_text: str,
        found_ids: set[int] | None = None,
    ) -> None:
        from cervixnet.data import bezier, imagefile

        try:
            pixels = imagefile.read_image(image)
        except imagefile.ImageFileError as error:
            self.fail("image", f"{error.reason}: {_shown(image_text)}")
            return
        height, width = pixels.shape[:2]
        if mask is not None:
            try:
                values = imagefile.mask_values(imagefile.read_image(mask))
            except imagefile.ImageFileError as error:
                self.fail(self.mask_column, f"{error.reason}: {_shown(mask_text)}")
            else:
                problem = imagefile.mask_problem(values, self.classes)
                if found_ids is not None and self.classes > 1 and not problem:
                    found_ids.update(np.unique(values).tolist())
                if values.shape[:2] != (height, width):
                    self.fail(
                        self.mask_column,
                        f"the mask is {values.shape[1]}x{values.shape[0]} pixels but its "
                        f"image is {width}x{height}: {_shown(mask_text)}",
                    )
                elif problem:
                    self.fail(self.mask_column, f"{problem}: {_shown(mask_text)}")
        for annotation in filter(None, (a.strip() for a in bezier_text.split(";"))):
            try:
                name, text = bezier.split_class(annotation)
                points = bezier.parse_points(text)
            except ValueError as error:
                self.fail("bezier", str(error))
                continue
            if name is None and self.classes > 1 and mask is None:
                self.fail(
                    "bezier",
                    f"with several classes ({', '.join(self.class_names)}) and no mask file, "
                    f'each annotation names its class, e.g. "{self.class_names[0]}: 10,20 '
                    f'30,5 50,20 30,40". Received: {_shown(annotation, quote=True)}',
                )
            elif name is not None and name not in self.class_names:
                self.fail(
                    "bezier",
                    f"unknown class {name!r}; data.classes: {', '.join(self.class_names)}. "
                    f"Received: {_shown(annotation, quote=True)}",
                )
            outside = [
                f"{x:g},{y:g}" for x, y in points if not (0 <= x <= width and 0 <= y <= height)
            ]
            if outside:
                self.fail(
                    "bezier",
                    f"control point(s) {' '.join(outside)} outside the {width}x{height} image",
                )


def _shown(text: str, quote: bool = False) -> str:
    """A cell as a message shows it: as written, or quoted and escaped when it holds line
    breaks or other invisible characters (so that a problem stays one line)."""
    if not text.isprintable():
        return repr(text)
    return f"'{text}'" if quote else text


def _is_nan(text: str) -> bool:
    return text.lower() in ("nan", "na", "n/a", "none", "null", "-")


def _resolve(root: Path, text: str) -> Path:
    path = Path(text)
    with contextlib.suppress(RuntimeError):  # "~name" of no known user: a plain relative name
        path = path.expanduser()
    return path if path.is_absolute() else root / path


def _absent_classes(
    manifest_path: Path, mask_column: str, classes: Sequence[str], found_ids: set[int]
) -> list[Problem]:
    """A problem for each class that no mask holds: a model cannot learn it, and its scores
    would be those of an empty class."""
    return [
        Problem(
            manifest_path,
            None,
            mask_column,
            f"class {k} ({name}) appears in no mask; data.classes names "
            f"{len(classes)} classes ({', '.join(classes)}), so every id 1..{len(classes)} "
            f"must mark some pixels. Received: ids {sorted(found_ids)}",
        )
        for k, name in enumerate(classes, start=1)
        if k not in found_ids
    ]


def _duplicates(manifest_path: Path, records: list[Record]) -> list[Problem]:
    first_row: dict[Path, int] = {}
    problems = []
    for record in records:
        earlier = first_row.setdefault(record.image, record.row)
        if earlier != record.row:
            problems.append(
                Problem(manifest_path, record.row, "image", f"the same image as row {earlier}")
            )
    return problems


def _conflicting_labels(manifest_path: Path, records: list[Record]) -> list[Problem]:
    first_seen: dict[str, Record] = {}
    problems = []
    for record in records:
        if record.label is None:
            continue
        earlier = first_seen.setdefault(record.patient_id, record)
        if earlier.label != record.label:
            problems.append(
                Problem(
                    manifest_path,
                    record.row,
                    "label",
                    f"patient {_shown(record.patient_id, quote=True)} has label {record.label} "
                    f"here but {earlier.label} in row {earlier.row}; one pregnancy has one outcome",
                )
            )
    return problems


def _positive_finite(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) > 0
    except ValueError:
        return False


def _partial_spacing(manifest_path: Path, records: list[Record]) -> list[Problem]:
    """A spacing given for some rows and not others: millimetres for some images and pixels
    for the rest would mix units, so each row without it is a problem."""
    given = [r for r in records if r.spacing is not None]
    if not given or len(given) == len(records):
        return []
    example = given[0]
    return [
        Problem(
            manifest_path,
            record.row,
            SPACING_COLUMN,
            f"no pixel spacing here, but row {example.row} has one; give every row its "
            f"spacing, or none (then every figure is in pixels)",
        )
        for record in records
        if record.spacing is None
    ]
