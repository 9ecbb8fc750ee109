"""``cervixnet data import-dicom`` (``cervixnet.data.dicom_import``) and ``data synth --format
dicom``: pydicom's own ultrasound examples, files the tests write (each spacing source, each bad
case), pseudonyms, outcomes and masks, no identity in any output, and a synthetic DICOM set
imported, trained on and measured in mm."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless

from cervixnet.cli.main import main
from cervixnet.data.dicom import DicomError, dicom_text, read_dicom
from cervixnet.data.dicom_import import import_dicom, pseudonym, read_outcomes, read_salt
from cervixnet.data.manifest import read_manifest
from cervixnet.errors import DataError
from tests.dicom_files import region as _region
from tests.dicom_files import write_dicom as _write


def _manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _import(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["data", "import-dicom", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_pydicoms_ultrasound_examples_are_imported_or_refused_by_name(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("examples_ybr_color.dcm", "examples_palette.dcm", "examples_rgb_color.dcm"):
        shutil.copy(get_testdata_file(name), source / name)
    # The cine loop (JPEG baseline, 30 frames, 33.333 ms apart) without its misplaced regions.
    cine = pydicom.dcmread(source / "examples_ybr_color.dcm")
    del cine.SequenceOfUltrasoundRegions
    (source / "cine").mkdir()
    cine.save_as(str(source / "cine" / "loop.dcm"))
    (source / "README.txt").write_text("not DICOM")
    before = _digest(source)

    code, output = _import(
        str(source), "--out", str(tmp_path / "out"), "--salt-file", str(tmp_path / "salt"),
        "--frames", "all",
    )  # fmt: skip
    assert code == 0, output
    assert _digest(source) == before  # only read
    rows = _manifest(tmp_path / "out")
    loop = [r for r in rows if r["source_file"] == "cine/loop.dcm"]
    assert [r["frame"] for r in loop] == [str(k) for k in range(1, 31)]
    assert [float(r["frame_time_ms"]) for r in loop[:3]] == pytest.approx([0.0, 33.333, 66.666])
    first = cv2.imread(str(tmp_path / "out" / loop[0]["image"]), cv2.IMREAD_UNCHANGED)
    assert first.shape == (240, 320, 3)
    (rgb,) = [r for r in rows if r["source_file"] == "examples_rgb_color.dcm"]
    assert rgb["pixel_spacing_mm"] == "" and rgb["spacing_source"] == "" and rgb["label"] == ""
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["imported_files"] == 2 and report["imported_frames"] == 31
    assert report["spacing"] == {"ultrasound region": 0, "PixelSpacing": 0, "none": 2}
    assert report["skipped_not_dicom"] == ["README.txt"]
    failed = {f["file"]: f["reason"] for f in report["failed"]}
    assert set(failed) == {"examples_ybr_color.dcm", "examples_palette.dcm"}
    assert "0018,6011" in failed["examples_palette.dcm"]
    assert "outside the 320 x 240 image" in failed["examples_ybr_color.dcm"]
    assert "`examples_palette.dcm`: SequenceOfUltrasoundRegions (0018,6011)" in output
    assert "Warning: 2 DICOM file(s) were not imported" in output


def test_each_spacing_source_and_the_crop(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    ecg = _region(box=(0, 36, 59, 39), units=(4, 0), delta=(0.01, 0.0), kind=(4, 10))
    _write(source / "region.dcm", regions=[_region(), ecg], patient_id="A")  # 0.12 x 0.1 mm
    _write(source / "plain.dcm", pixel_spacing=[0.2, 0.25], patient_id="B", rgb=True)
    _write(source / "none.dcm", patient_id="C")
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 20:40] = 255
    cv2.imwrite(str(masks / "region.png"), mask)

    result = import_dicom(source, tmp_path / "out", tmp_path / "salt", crop=True, masks=masks)
    rows = {r["source_file"]: r for r in _manifest(tmp_path / "out")}
    assert list(next(iter(rows.values()))) == [
        "image", "patient_id", "label", "mask", "spacing_y_mm", "spacing_x_mm",
        "spacing_source", "source_file", "frame", "crop_box",
    ]  # fmt: skip
    region = rows["region.dcm"]
    assert (region["spacing_y_mm"], region["spacing_x_mm"]) == ("0.12", "0.1")
    assert region["spacing_source"] == "ultrasound region" and region["crop_box"] == "10,5,50,35"
    image = cv2.imread(str(tmp_path / "out" / region["image"]), cv2.IMREAD_UNCHANGED)
    cropped = cv2.imread(str(tmp_path / "out" / region["mask"]), cv2.IMREAD_UNCHANGED)
    assert image.shape == cropped.shape == (31, 41)  # the box is inclusive
    assert image[0, 0] == (5 * 60 + 10) % 200 and cropped.sum() == mask.sum()
    plain = rows["plain.dcm"]
    assert (plain["spacing_y_mm"], plain["spacing_x_mm"]) == ("0.2", "0.25")
    assert plain["crop_box"] == "" and plain["mask"] == ""  # no region: kept whole
    rgb = cv2.imread(str(tmp_path / "out" / plain["image"]), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (40, 60, 3)
    assert rows["none.dcm"]["spacing_y_mm"] == "" and rows["none.dcm"]["spacing_source"] == ""
    report = result.report
    assert report["spacing"] == {"ultrasound region": 1, "PixelSpacing": 1, "none": 1}
    assert report["files_without_spacing"] == ["none.dcm"] and report["cropped_files"] == 1
    assert any("mixes millimetres and pixels" in note for note in report["notes"])
    with pytest.raises(DataError, match=r"no pixel spacing here, but row \d has one"):
        read_manifest(tmp_path / "out", decode=True)

    # --without-spacing omit: the scan without one is left out, its files too, and the rest
    # is a data set in mm.
    omitted = import_dicom(
        source, tmp_path / "omit", tmp_path / "salt", crop=True, masks=masks, without_spacing="omit"
    )
    assert [r["source_file"] for r in _manifest(tmp_path / "omit")] == ["plain.dcm", "region.dcm"]
    assert omitted.report["files_left_out_without_spacing"] == ["none.dcm"]
    assert "none.dcm" in (tmp_path / "omit" / "import_report.md").read_text()
    written = sorted(p.name for p in (tmp_path / "omit" / "images").iterdir())
    assert written == sorted(Path(r["image"]).name for r in _manifest(tmp_path / "omit"))
    assert all(r.spacing is not None for r in read_manifest(tmp_path / "omit", decode=True).records)

    square = tmp_path / "square"
    square.mkdir()
    _write(square / "a.dcm", pixel_spacing=[0.2, 0.2])
    import_dicom(square, tmp_path / "out2", tmp_path / "salt")
    (row,) = _manifest(tmp_path / "out2")
    assert row["pixel_spacing_mm"] == "0.2" and "spacing_y_mm" not in row


def _bad_files(folder: Path) -> dict[str, str]:
    """One file per bad case, and what its line in the report must say."""
    folder.mkdir()
    (folder / "notes.dcm").write_text("not a DICOM file")
    whole = _write(folder / "whole.dcm").read_bytes()
    (folder / "whole.dcm").unlink()
    (folder / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
    _write(folder / "empty.dcm", pixels=False)
    jpegls = _write(folder / "jpegls.dcm")
    dataset = pydicom.dcmread(jpegls)
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not really JPEG-LS"])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(str(jpegls), enforce_file_format=True)
    _write(folder / "two.dcm", regions=[_region(), _region()])
    _write(folder / "units.dcm", regions=[_region(units=(4, 4))])
    _write(folder / "outside.dcm", regions=[_region(box=(10, 5, 90, 35))])
    _write(folder / "zero.dcm", regions=[_region(delta=(0.0, 0.01))])
    _write(folder / "zero_ps.dcm", pixel_spacing=[0.0, 0.2])
    _write(folder / "wide.dcm", bits=16)
    _write(folder / "signed.dcm", signed=1)
    _write(folder / "charset.dcm", charset="ISO_IR 999")
    _write(folder / "bytes.dcm", charset="ISO_IR 192", patient_id=b"\xff\xfeID")
    _write(folder / "nobody.dcm", patient_id=None)
    return {
        "notes.dcm": "not a DICOM file",
        "truncated.dcm": "PixelData (7FE0,0010) cannot be read",
        "empty.dcm": "no pixel data (7FE0,0010)",
        "jpegls.dcm": "TransferSyntaxUID (0002,0010) JPEG-LS",
        "two.dcm": "(0018,6011): 2 2D tissue regions",
        "units.dcm": "PhysicalUnitsXDirection (0018,6024)",
        "outside.dcm": "[10, 5, 90, 35] lies outside",
        "zero.dcm": "PhysicalDeltaX (0018,602C)",
        "zero_ps.dcm": "PixelSpacing (0028,0030)",
        "wide.dcm": "BitsAllocated (0028,0100) 16",
        "signed.dcm": "PixelRepresentation (0028,0103) 1",
        "charset.dcm": "SpecificCharacterSet (0008,0005): not a character set pydicom knows, "
        "so PatientID (0010,0020) cannot be read. Received: 'ISO_IR 999'",
        "bytes.dcm": "PatientID (0010,0020): its bytes do not decode in the file's "
        "SpecificCharacterSet (0008,0005) 'ISO_IR 192'",
        "nobody.dcm": "no PatientID (0010,0020) and no StudyInstanceUID (0020,000D)",
    }


def test_each_bad_file_is_named_with_its_tag_and_the_good_ones_imported(tmp_path, caplog):
    source = tmp_path / "src"
    expected = _bad_files(source)
    _write(source / "good.dcm", pixel_spacing=[0.2, 0.2])
    before = _digest(source)
    caplog.clear()
    code, output = _import(
        str(source), "--out", str(tmp_path / "out"), "--salt-file", str(tmp_path / "salt")
    )
    assert code == 0, output
    assert not caplog.records  # pydicom's warnings can quote header values: none gets out
    failed = {f["file"]: f["reason"] for f in read_report(tmp_path / "out")["failed"]}
    assert set(failed) == set(expected)
    for name, message in expected.items():
        assert message in failed[name], (name, failed[name])
        assert f"`{name}`: {failed[name]}" in output
    assert [r["source_file"] for r in _manifest(tmp_path / "out")] == ["good.dcm"]
    assert f"Warning: {len(expected)} DICOM file(s) were not imported" in output
    assert _digest(source) == before

    # --strict: nothing written, exit 1, the first failure named.
    code, output = _import(
        str(source), "--out", str(tmp_path / "strict"), "--salt-file", str(tmp_path / "salt"),
        "--strict",
    )  # fmt: skip
    assert code == 1 and "could not be imported (--strict: nothing written)" in output
    assert "bytes.dcm: PatientID (0010,0020)" in output
    assert not (tmp_path / "strict").exists() and not list(tmp_path.glob(".strict*"))

    # Nothing importable: one line, nothing written.
    (source / "good.dcm").unlink()
    code, output = _import(
        str(source), "--out", str(tmp_path / "none"), "--salt-file", str(tmp_path / "salt")
    )
    assert code == 1 and "no DICOM image could be imported (14 failed" in output
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none*"))


def read_report(folder: Path) -> dict:
    return json.loads((folder / "import_report.json").read_text(encoding="utf-8"))


def test_text_tags_are_decoded_strictly_in_their_character_set(tmp_path):
    latin = read_dicom(_write(tmp_path / "latin.dcm", charset="ISO_IR 100",
                              patient_id="Müller-7".encode("latin-1")))  # fmt: skip
    assert dicom_text(latin, "PatientID", "latin.dcm") == "Müller-7"
    assert dicom_text(latin, "AccessionNumber", "latin.dcm") is None
    plain = read_dicom(_write(tmp_path / "plain.dcm", patient_id="ID 7 "))
    assert dicom_text(plain, "PatientID") == "ID 7"
    utf8 = read_dicom(_write(tmp_path / "utf8.dcm", charset="ISO_IR 192",
                             patient_id="Müller-7".encode("latin-1")))  # fmt: skip
    with pytest.raises(DicomError, match=r"^utf8\.dcm: PatientID \(0010,0020\): its bytes") as e:
        dicom_text(utf8, "PatientID", "utf8.dcm")
    assert "Müller" not in str(e.value) and "M\\xfc" not in str(e.value)
    unknown = read_dicom(_write(tmp_path / "unknown.dcm", charset="ISO_IR 999"))
    with pytest.raises(DicomError, match=r"SpecificCharacterSet \(0008,0005\).*ISO_IR 999"):
        dicom_text(unknown, "PatientID", "unknown.dcm")


def test_pseudonyms_are_stable_with_the_salt_and_differ_with_another(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    _write(source / "a1.dcm", patient_id="PAT-1")
    _write(source / "a2.dcm", patient_id="PAT-1")
    _write(source / "b.dcm", patient_id="PAT-2")
    _write(source / "study.dcm", patient_id=None, study_uid="1.2.3.4.5.6.7")
    salt = tmp_path / "keys" / "salt"
    first = import_dicom(source, tmp_path / "one", salt)
    assert first.salt_created and salt.stat().st_mode & 0o077 == 0  # owner only
    again = import_dicom(source, tmp_path / "two", salt)
    assert not again.salt_created
    ids = [[r["patient_id"] for r in _manifest(tmp_path / n)] for n in ("one", "two")]
    assert ids[0] == ids[1] and len(set(ids[0])) == 3 and ids[0][0] == ids[0][1]
    key, _ = read_salt(salt)
    assert ids[0][0] == pseudonym("PAT-1", key) and len(ids[0][0]) == 16
    assert ids[0][3] == pseudonym("1.2.3.4.5.6.7", key)
    assert first.report["patient_id_from"] == {"PatientID": 3, "StudyInstanceUID": 1}
    assert first.report["files_keyed_by_study"] == ["study.dcm"]
    other = tmp_path / "other-salt"
    other.write_text("another secret of enough length\n")
    import_dicom(source, tmp_path / "three", other)
    assert not set(r["patient_id"] for r in _manifest(tmp_path / "three")) & set(ids[0])

    for text, message in (("", "at least 16 characters"), ("short", "Received: 5 characters")):
        bad = tmp_path / "bad-salt"
        bad.write_text(text)
        code, output = _import(str(source), "--out", str(tmp_path / "x"), "--salt-file", str(bad))
        assert code == 1 and message in output and not (tmp_path / "x").exists()
    code, output = _import(
        str(source), "--out", str(tmp_path / "x"), "--salt-file", str(source / "salt")
    )
    assert code == 1 and "keep the salt apart" in output and not (source / "salt").exists()
    code, output = _import(str(source), "--out", str(source / "x"), "--salt-file", str(salt))
    assert code == 1 and "lies inside the source folder" in output
    code, output = _import(str(source), "--out", str(tmp_path / "one"), "--salt-file", str(salt))
    assert code == 1 and "exists and is not an empty folder" in output


def test_outcomes_join_by_patient_id_or_accession_and_bad_rows_are_named(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    _write(source / "a.dcm", patient_id="PAT-1", accession="ACC-9")
    _write(source / "b.dcm", patient_id="PAT-2", accession="ACC-8")
    _write(source / "c.dcm", patient_id="PAT-3", accession="ACC-7")
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text("patient_id,accession_number,label\nPAT-1,,1\n,ACC-8,0\nPAT-4,,0\n")
    result = import_dicom(source, tmp_path / "out", tmp_path / "salt", outcomes=outcomes)
    labels = {r["source_file"]: r["label"] for r in _manifest(tmp_path / "out")}
    assert labels == {"a.dcm": "1", "b.dcm": "0", "c.dcm": ""}
    assert result.report["outcome_rows_without_a_scan"] == 1
    assert result.report["labels"] == {"preterm": 1, "control": 1, "unknown": 1}

    for text, message in (
        ("patient_id,label\nPAT-1,1\nPAT-2,2\n", r"row 3, column 'label': .* Received: '2'"),
        ("patient_id,label\n,1\n", r"row 2, column 'patient_id': empty"),
        ("patient_id,label\nPAT-1,1\nPAT-1,0\n", r"row 3, column 'label': the same patient_id"),
        ("id,outcome\nPAT-1,1\n", r"row 1: expected the columns label and patient_id"),
        ("accession_number,label\nACC-9,1\nACC-8,1\n", None),
    ):  # fmt: skip
        outcomes.write_text(text)
        out = tmp_path / f"out-{len(text)}"
        code, output = _import(
            str(source), "--out", str(out), "--salt-file", str(tmp_path / "salt"),
            "--labels", str(outcomes),
        )  # fmt: skip
        if message is None:
            assert code == 0, output
            continue
        assert code == 1 and str(outcomes) in output, output
        assert re.search(message, output), output
        assert "PAT-1" not in output and not out.exists()
    # Two scans of one patient given different labels through their accession numbers.
    _write(source / "d.dcm", patient_id="PAT-1", accession="ACC-6")
    outcomes.write_text("accession_number,label\nACC-9,1\nACC-6,0\n")
    with pytest.raises(Exception, match=r"row 3, column 'label': gives d\.dcm label 0"):
        import_dicom(source, tmp_path / "conflict", tmp_path / "salt", outcomes=outcomes)
    assert not (tmp_path / "conflict").exists()
    assert read_outcomes(outcomes)["accession_number"]["ACC-6"].row == 3


def test_masks_must_match_their_scan(tmp_path):
    source, masks = tmp_path / "src", tmp_path / "masks"
    (source / "s").mkdir(parents=True)
    (masks / "s").mkdir(parents=True)
    for name in ("fits", "small", "grey", "IM0001"):
        _write(
            source / "s" / (name if name == "IM0001" else f"{name}.dcm"), pixel_spacing=[0.2, 0.2]
        )
    fits = np.zeros((40, 60), np.uint8)
    fits[5:15, 5:25] = 1
    cv2.imwrite(str(masks / "s" / "fits.png"), fits)
    cv2.imwrite(str(masks / "s" / "IM0001.png"), fits * 255)
    cv2.imwrite(str(masks / "s" / "small.png"), np.zeros((10, 10), np.uint8))
    cv2.imwrite(str(masks / "s" / "grey.png"), np.full((40, 60), 7, np.uint8))
    result = import_dicom(source, tmp_path / "out", tmp_path / "salt", masks=masks)
    failed = {f.file: f.reason for f in result.failures}
    assert failed == {
        "s/small.dcm": "its mask s/small.png (--masks) is 10x10 pixels but the scan is 60x40",
        "s/grey.dcm": failed["s/grey.dcm"],
    }
    assert failed["s/grey.dcm"].startswith("its mask s/grey.png (--masks): not a binary mask")
    rows = {r["source_file"]: r for r in _manifest(tmp_path / "out")}
    for name in ("s/fits.dcm", "s/IM0001"):
        written = cv2.imread(str(tmp_path / "out" / rows[name]["mask"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, fits * 255)


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append(data[position + 4 : position + 8])
        position += 12 + length
    return chunks


def _identity_values(files: list[Path]) -> set[bytes]:
    """Every identifying header value of the files, as the bytes a leak would show."""
    values: set[str] = set()
    for path in files:
        dataset = pydicom.dcmread(path)
        name = dataset.get("PatientName")
        if name:
            values |= {str(name), name.family_name, name.given_name}
        for keyword in ("PatientBirthDate", "PatientID", "AccessionNumber", "InstitutionName",
                        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):  # fmt: skip
            if dataset.get(keyword):
                values.add(str(dataset.get(keyword)))
    encoded = {v.encode("utf-8") for v in values if len(v) >= 6}
    return encoded | {v.encode("latin-1", "ignore") for v in values if len(v) >= 6}


def test_no_identifying_value_reaches_any_output(tmp_path):
    runner = CliRunner()
    synth = runner.invoke(
        main, ["data", "synth", "--format", "dicom", "--out", str(tmp_path / "syn"),
               "--n-images", "12", "--n-preterm", "3", "--seed", "4"],
    )  # fmt: skip
    assert synth.exit_code == 0, synth.output
    dicoms = sorted((tmp_path / "syn" / "dicom").rglob("*.dcm"))
    # One file whose spacing is refused, so that a failure is reported too.
    broken = pydicom.dcmread(dicoms[0])
    broken.SequenceOfUltrasoundRegions[0].PhysicalUnitsXDirection = 4
    broken.save_as(str(dicoms[0]))
    secrets = _identity_values(dicoms)
    assert len(secrets) > 30
    result = runner.invoke(
        main,
        ["data", "import-dicom", str(tmp_path / "syn" / "dicom"), "--out", str(tmp_path / "out"),
         "--salt-file", str(tmp_path / "salt"), "--labels", str(tmp_path / "syn" / "outcomes.csv"),
         "--masks", str(tmp_path / "syn" / "masks"), "--frames", "all", "--crop"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert {p.suffix for p in written} == {".png", ".csv", ".json", ".md"}
    for path in written:
        data = path.read_bytes()
        leaked = [s for s in secrets if s in data]
        assert not leaked, (path, leaked)
        if path.suffix == ".png":
            assert set(_png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND", b"PLTE"}, path
    leaked = [s for s in secrets if s in result.output.encode("utf-8")]
    assert not leaked and "PhysicalUnitsXDirection (0018,6024)" in result.output
    report = read_report(tmp_path / "out")
    assert report["header_values_copied"] == [] and report["imported_files"] == 11
    assert {"keyword": "PatientID", "tag": "(0010,0020)"}.items() <= report["tags_read"][0].items()
    markdown = (tmp_path / "out" / "import_report.md").read_text(encoding="utf-8")
    assert "| (0010,0020) | PatientID |" in markdown and "none copied" in markdown


@pytest.mark.slow
def test_synthetic_dicoms_are_imported_trained_on_and_measured_in_mm(tmp_path):
    from cervixnet.config import load_config
    from cervixnet.measure import cervical_length
    from cervixnet.runs import train
    from tests.conftest import TINY_RUN_CONFIG

    runner = CliRunner()
    synth = runner.invoke(
        main, ["data", "synth", "--format", "dicom", "--out", str(tmp_path / "syn"),
               "--n-images", "30", "--n-preterm", "8"],
    )  # fmt: skip
    assert synth.exit_code == 0, synth.output
    layout = sorted(p.name for p in (tmp_path / "syn").iterdir())
    assert layout == ["dicom", "generator.json", "masks", "outcomes.csv", "truth.csv"]
    data = tmp_path / "data"
    syn = tmp_path / "syn"
    code, output = _import(
        str(syn / "dicom"), "--out", str(data), "--salt-file", str(tmp_path / "salt"),
        "--labels", str(syn / "outcomes.csv"), "--masks", str(syn / "masks"),
    )  # fmt: skip
    assert code == 0, output
    rows = _manifest(data)
    assert len(rows) == 30 and all(r["mask"] and r["label"] for r in rows)
    with (tmp_path / "syn" / "truth.csv").open(newline="") as handle:
        truth = {r["source_file"]: r for r in csv.DictReader(handle)}
    # The imported masks at the imported spacing give the generator's lengths.
    errors = []
    for row in rows:
        mask = cv2.imread(str(data / row["mask"]), cv2.IMREAD_GRAYSCALE)
        measured = cervical_length(mask, float(row["pixel_spacing_mm"])).value
        errors.append(measured - float(truth[row["source_file"]]["cervical_length_mm"]))
        spacing = float(truth[row["source_file"]]["pixel_spacing_mm"])
        assert float(row["pixel_spacing_mm"]) == pytest.approx(spacing, rel=1e-9)
    assert abs(np.mean(errors)) < 1.5 and np.max(np.abs(errors)) < 3.0, errors

    config = load_config(overrides={**TINY_RUN_CONFIG, "data.path": str(data)})
    run = train(config, tmp_path / "run", verbose=0, echo=lambda _: None).run_dir
    out = tmp_path / "predicted"
    result = runner.invoke(main, ["predict", str(run), str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "predictions.csv").open(newline="") as handle:
        predicted = list(csv.DictReader(handle))
    assert len(predicted) == 30 and "cervical_length_mm" in predicted[0]
    by_image = {str((data / r["image"]).resolve()): r["source_file"] for r in rows}
    lengths = [
        (
            float(p["cervical_length_mm"]),
            float(truth[by_image[str(Path(p["image"]).resolve())]]["cervical_length_mm"]),
        )
        for p in predicted
        if p["cervical_length_mm"]
    ]
    assert lengths and all(np.isfinite(m) and m > 0 for m, _ in lengths)
    mae = np.mean([abs(m - t) for m, t in lengths])
    print(
        f"\nmask lengths vs truth: mean error {np.mean(errors):+.2f} mm, max "
        f"{np.max(np.abs(errors)):.2f} mm; predicted vs truth: MAE {mae:.1f} mm "
        f"over {len(lengths)} images"
    )


def test_one_frame_of_a_cine_loop_with_its_time(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    _write(source / "loop.dcm", frames=3, frame_time=40.0)
    _write(source / "still.dcm")
    code, output = _import(
        str(source), "--out", str(tmp_path / "out"), "--salt-file", str(tmp_path / "salt"),
        "--frames", "2",
    )  # fmt: skip
    assert code == 0, output
    (row,) = _manifest(tmp_path / "out")
    assert (row["source_file"], row["frame"], row["frame_time_ms"]) == ("loop.dcm", "2", "40.000")
    image = cv2.imread(str(tmp_path / "out" / row["image"]), cv2.IMREAD_UNCHANGED)
    assert image[0, 0] == (40 * 60) % 200  # the second frame's first pixel
    assert (
        "`still.dcm`: frames must be 'first', 'all' or a frame number 1..1. Received: 2" in output
    )
    code, output = _import(
        str(source), "--out", str(tmp_path / "x"), "--salt-file", str(tmp_path / "salt"),
        "--frames", "0",
    )  # fmt: skip
    assert code == 2 and "expected first, all or a frame number from 1. Received: '0'" in output
