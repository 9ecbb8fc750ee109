"""`cervixnet data validate`: every problem of a broken manifest, one line each."""

import hashlib
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.data.manifest import check_manifest
from tests.conftest import rewrite_manifest


def _break_rows(folder: Path) -> dict[int, tuple[str, str]]:
    """Breaks the tiny data set in a dozen ways; returns row -> (column, expected text)."""
    (folder / "images" / "empty.png").write_bytes(b"")
    (folder / "images" / "text.png").write_text("not an image")
    cv2.imwrite(str(folder / "masks" / "small.png"), np.zeros((10, 10), np.uint8))
    expected = {
        2: ("image", "file not found: images/missing.png"),
        3: ("image", "empty file (0 bytes), not an image: images/empty.png"),
        4: (
            "image",
            "cannot be decoded as an image (expected PNG, JPEG, BMP or TIFF): images/text.png",
        ),
        5: ("mask", "file not found: masks/missing.png"),
        6: ("mask", "the mask is 10x10 pixels but its image is 64x48"),
        7: ("label", "Received: 'yes'"),
        8: ("label", "Received: '2'"),
        9: ("patient_id", "empty; every row needs a patient id"),
        10: ("bezier", "outside the 64x48 image"),
        11: ("bezier", "1,2 3,4"),
        13: ("image", "the same image as row 12"),
        15: ("label", "patient 'p06' has label 1 here but 0 in row 14"),
        16: ("image", "empty; every row needs an image path"),
    }

    def edit(fields, rows):
        for row in rows:
            row["bezier"] = ""
        rows[0]["image"] = "images/missing.png"
        rows[1]["image"] = "images/empty.png"
        rows[2]["image"] = "images/text.png"
        rows[3]["mask"] = "masks/missing.png"
        rows[4]["mask"] = "masks/small.png"
        rows[5]["label"] = "yes"
        rows[6]["label"] = "2"
        rows[7]["patient_id"] = ""
        rows[8]["bezier"] = "10,10 20,10 20,90 10,20"
        rows[9]["bezier"] = "1,2 3,4"
        rows[10]["image"], rows[10]["mask"] = rows[11]["image"], rows[11]["mask"]
        rows[13]["label"] = "1"
        rows[14]["image"] = ""
        return [*fields, "bezier"], rows

    rewrite_manifest(folder / "manifest.csv", edit)
    return expected


def _fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_every_problem_is_found_once(tiny_dataset: Path):
    expected = _break_rows(tiny_dataset)
    _, records, problems = check_manifest(tiny_dataset, decode=True)
    found = {(p.row, p.column) for p in problems}
    # Row 12 takes row 13's image: the duplicate is reported where it is seen second.
    assert found == {(row, column) for row, (column, _) in expected.items()}
    for problem in problems:
        assert expected[problem.row][1] in problem.reason
    # The duplicate (row 13) and the conflicting label (row 15) are whole-file findings: those
    # rows parse; every other broken row is left out of the records.
    assert len(records) == 20 - len(expected) + 2


def test_validate_prints_one_line_per_problem_and_touches_nothing(tiny_dataset: Path):
    expected = _break_rows(tiny_dataset)
    before = _fingerprint(tiny_dataset)
    result = CliRunner().invoke(main, ["data", "validate", str(tiny_dataset)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1] == f"Error: {len(expected)} problem(s) in {tiny_dataset / 'manifest.csv'}"
    problem_lines = lines[:-1]
    assert len(problem_lines) == len(expected)
    assert all(line.startswith(f"{tiny_dataset / 'manifest.csv'}, row ") for line in problem_lines)
    assert _fingerprint(tiny_dataset) == before


def test_train_refuses_a_broken_manifest_before_training(tiny_dataset: Path, tmp_path: Path):
    _break_rows(tiny_dataset)
    result = CliRunner().invoke(
        main, ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    assert "row 2, column 'image': file not found" in result.output
    assert "12 more problems; `cervixnet data validate` lists them all" in result.output
    assert not (tmp_path / "run").exists()


def test_validate_accepts_a_good_data_set(tiny_dataset: Path):
    result = CliRunner().invoke(main, ["data", "validate", str(tiny_dataset)])
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output and "20 images of 10 patients, 10 preterm" in result.output
