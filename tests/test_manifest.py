from pathlib import Path

import pytest

from cervixnet.data.manifest import read_manifest, resolve_manifest_path
from cervixnet.errors import DataError
from tests.conftest import rewrite_manifest


def test_reads_folder_or_file(tiny_dataset: Path):
    by_folder = read_manifest(tiny_dataset)
    by_file = read_manifest(tiny_dataset / "manifest.csv")
    assert by_folder == by_file
    assert len(by_folder.records) == 20
    first = by_folder.records[0]
    assert first.row == 2
    assert first.image == (tiny_dataset / "images" / "p00_0.png").resolve()
    assert first.patient_id == "p00"
    assert first.label == 0
    assert first.extra == {"site": "A"}
    assert by_folder.column("site") == ["A"] * 20


def test_empty_label_and_mask_are_allowed(tiny_dataset: Path):
    def edit(fields, rows):
        rows[0]["label"] = ""
        rows[1]["mask"] = ""
        return fields, rows

    rewrite_manifest(tiny_dataset / "manifest.csv", edit)
    manifest = read_manifest(tiny_dataset)
    assert manifest.records[0].label is None
    assert manifest.records[1].mask is None


def _drop_column(name):
    def edit(fields, rows):
        return [f for f in fields if f != name], [
            {k: v for k, v in r.items() if k != name} for r in rows
        ]

    return edit


def _set(row, column, value):
    def edit(fields, rows):
        rows[row][column] = value
        return fields, rows

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_drop_column("patient_id"), "missing required column(s) patient_id"),
        (_drop_column("mask"), "missing required column(s) mask"),
        (_set(2, "label", "yes"), "row 4, column 'label': expected 1 (preterm), 0 (control)"),
        (_set(2, "label", "2"), "Received: '2'"),
        (_set(3, "image", "images/missing.png"), "row 5, column 'image': file not found"),
        (_set(3, "mask", "masks/missing.png"), "row 5, column 'mask': file not found"),
        (_set(0, "patient_id", ""), "row 2, column 'patient_id': empty"),
        (_set(1, "label", "1"), "row 3, column 'label': patient 'p00' has label 1 here but 0"),
    ],
)
def test_bad_rows_name_file_row_and_column(tiny_dataset: Path, edit, expected: str):
    manifest = tiny_dataset / "manifest.csv"
    rewrite_manifest(manifest, edit)
    with pytest.raises(DataError) as info:
        read_manifest(tiny_dataset)
    assert str(manifest.resolve()) in str(info.value)
    assert expected in str(info.value)


def test_empty_manifest(tmp_path: Path):
    (tmp_path / "manifest.csv").write_text("image,patient_id,label,mask\n")
    with pytest.raises(DataError, match="no rows"):
        read_manifest(tmp_path)


def test_missing_folder_and_manifest(tmp_path: Path):
    with pytest.raises(DataError, match=r"no manifest\.csv in this folder"):
        resolve_manifest_path(tmp_path)
    with pytest.raises(DataError, match="no such data folder"):
        resolve_manifest_path(tmp_path / "nope")


def test_pixel_spacing_is_read_per_row_square_or_per_axis(tiny_dataset):
    def square(fields, rows):
        for k, row in enumerate(rows):
            row["pixel_spacing_mm"] = f"{0.1 + 0.01 * k:.2f}"
        return [*fields, "pixel_spacing_mm"], rows

    rewrite_manifest(tiny_dataset / "manifest.csv", square)
    records = read_manifest(tiny_dataset).records
    assert records[0].spacing == (0.1, 0.1) and records[3].spacing == (0.13, 0.13)

    def per_axis(fields, rows):
        for row in rows:
            row["spacing_y_mm"], row["spacing_x_mm"] = "0.15", "0.25"
        return [*fields, "spacing_y_mm", "spacing_x_mm"], rows

    rewrite_manifest(tiny_dataset / "manifest.csv", per_axis)
    assert {r.spacing for r in read_manifest(tiny_dataset).records} == {(0.15, 0.25)}


def test_a_manifest_without_spacing_has_none(tiny_dataset):
    assert {r.spacing for r in read_manifest(tiny_dataset).records} == {None}
