"""Property-based tests of the parsers that read what users write: manifests and annotations.

Whatever the text, the parsers either succeed with well-formed results or raise cervixnet's
own error (:class:`~cervixnet.errors.DataError`), never another exception. The examples are
derandomised, so every run (and CI) tries the same inputs.
"""

from __future__ import annotations

import string
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cervixnet.data.bezier import parse_points
from cervixnet.data.manifest import REQUIRED_COLUMNS, check_manifest, read_manifest
from cervixnet.data.prepare import parse_annotations
from cervixnet.errors import DataError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text that looks like control points, and text that does not.
_number = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "-", ".", "1e999", "nan", "inf", "0x10", "1_0", "١٢", "½", "1,5"]),
)
_pair = st.builds(
    lambda x, sep, y: f"{x}{sep}{y}", _number, st.sampled_from([",", ";", " ", ""]), _number
)
_annotation = st.builds(
    lambda pairs, sep: sep.join(pairs),
    st.lists(_pair, min_size=0, max_size=6),
    st.sampled_from([" ", "  ", "\t", "\u2003", "\n", ""]),
)
_any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)


def _check_points(points: np.ndarray) -> None:
    assert points.shape == (4, 2) and points.dtype == np.float64
    assert np.all(np.isfinite(points))


@FUZZ
@given(st.one_of(_annotation, _any_text))
def test_parse_points_returns_four_finite_points_or_a_data_error(text: str):
    try:
        points = parse_points(text)
    except DataError as error:
        assert "\n" not in str(error)  # one line, even for text with line breaks
        return
    _check_points(points)


@FUZZ
@given(
    st.one_of(
        st.lists(_annotation, max_size=4).map(";".join),
        _any_text,
        st.none(),
    )
)
def test_parse_annotations_returns_point_arrays_or_a_data_error(text: str | None):
    try:
        annotations = parse_annotations(text)
    except DataError:
        return
    assert isinstance(annotations, list)
    for points in annotations:
        _check_points(points)


# Manifests: arbitrary bytes, odd encodings, missing columns, random cells.

_column_name = st.one_of(
    st.sampled_from(
        [*REQUIRED_COLUMNS, "bezier", "site", " image ", "Image", "label", "", "ma\nsk", "\x00"]
    ),
    st.text(string.printable, max_size=6),
)
_header_names = st.one_of(
    # every required column, in any order, with extra ones: the rows get checked
    st.builds(
        lambda required, extra: [*required, *extra],
        st.permutations(REQUIRED_COLUMNS),
        st.lists(_column_name, max_size=3),
    ),
    # anything, usually with columns missing or repeated
    st.lists(_column_name, max_size=7),
)
_cell = st.one_of(
    st.sampled_from(
        [
            "", "a.png", "missing.png", "sub", "sub/", "~nobody/x.png", "/", "..", "0", "1",
            "1.0", "NaN", "yes", "2", "p1", "p2", " p1 ", "10,10 20,10 20,20 10,20",
            "a\nb.png", "p\r1", "\x00", "\t", "x\u2028y", '"', "a.png\x00",
        ]
    ),
    st.text(string.printable, max_size=12),
    _any_text,
)  # fmt: skip
_table = st.builds(
    lambda header, rows: [header, *rows],
    _header_names,
    st.lists(st.lists(_cell, max_size=8), max_size=6),
)
_encoding = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "utf-32"])


def _csv_text(table: list[list[str]], quote: bool, newline: str) -> str:
    def cell(value: str) -> str:
        if quote or any(c in value for c in ',"\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value

    return "".join(",".join(cell(v) for v in row) + newline for row in table)


_manifest_bytes = st.one_of(
    st.builds(
        lambda table, quote, newline, encoding: _csv_text(table, quote, newline).encode(
            encoding, errors="replace"
        ),
        _table,
        st.booleans(),
        st.sampled_from(["\n", "\r\n", "\r"]),
        _encoding,
    ),
    st.binary(max_size=200),
    st.builds(
        lambda text: text.encode("utf-8", errors="surrogatepass"),
        st.text(max_size=200),
    ),
)


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> Path:
    """A data folder with one good image and mask, a broken image and a sub-folder."""
    folder = tmp_path_factory.mktemp("fuzz")
    cv2.imwrite(str(folder / "a.png"), np.full((16, 24), 128, np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "sub").mkdir()
    return folder


def _check_result(manifest_path: Path, records, problems) -> None:
    for problem in problems:
        text = str(problem)
        assert "\n" not in text and "\r" not in text, text  # one line per problem
        assert problem.manifest == manifest_path
    for record in records:
        assert record.row >= 2
        assert record.patient_id and record.patient_id == record.patient_id.strip()
        assert record.label in (0, 1, None)
        assert record.image.is_absolute()
        assert set(record.extra).isdisjoint(REQUIRED_COLUMNS)


@FUZZ
@given(data=_manifest_bytes, decode=st.booleans())
def test_check_manifest_reports_problems_and_never_raises(
    fuzz_folder: Path, data: bytes, decode: bool
):
    manifest = fuzz_folder / "manifest.csv"
    manifest.write_bytes(data)
    path, records, problems = check_manifest(fuzz_folder, check_files=True, decode=decode)
    assert path == manifest.resolve()
    _check_result(path, records, problems)
    assert records or problems  # an empty or unusable manifest is itself a problem
    try:
        parsed = read_manifest(fuzz_folder, decode=decode)
    except DataError as error:
        assert problems and str(problems[0]) in str(error)
    else:
        assert not problems and list(parsed.records) == records


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "image": st.sampled_from(["a.png", "broken.png", "sub", "", "missing.png"]),
                "patient_id": st.sampled_from(["p1", "p2", "", " p3 "]),
                "label": st.one_of(st.sampled_from(["0", "1", "", "1.0", "NaN"]), _any_text),
                "mask": st.sampled_from(["", "a.png", "broken.png", "sub"]),
                "bezier": st.one_of(_annotation, st.lists(_annotation, max_size=3).map(";".join)),
            }
        ),
        min_size=1,
        max_size=5,
    )
)
def test_well_formed_csv_with_random_cells_is_checked_row_by_row(
    fuzz_folder: Path, rows: list[dict[str, str]]
):
    import csv

    manifest = fuzz_folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    path, records, problems = check_manifest(fuzz_folder, decode=True)
    _check_result(path, records, problems)
    flagged = {p.row for p in problems}
    for record in records:
        # A row that parsed is clean, or only flagged by the whole-file checks.
        assert record.row not in flagged or all(
            p.column in ("image", "label") for p in problems if p.row == record.row
        )
        assert record.image.name == "a.png"
    assert len(records) + len({p.row for p in problems if p.row}) >= len(rows)


def test_a_column_name_with_a_line_break_is_shown_escaped_in_one_line(tmp_path: Path):
    # Found by the fuzzer above: a repeated header name holding a quoted line break.
    (tmp_path / "manifest.csv").write_bytes(b'"ma\nsk","ma\nsk"\n')
    _, _, problems = check_manifest(tmp_path)
    (problem,) = problems
    assert "\n" not in str(problem)
    assert "column 'ma\\nsk'" in str(problem)
