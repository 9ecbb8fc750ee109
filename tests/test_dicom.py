"""Ultrasound DICOM files (``cervixnet.data.dicom``): pydicom's own ultrasound examples, and
files the tests write, one for each spacing source and each bad case."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless

from cervixnet.data.dicom import DicomError, dicom_frames, dicom_spacing, read_dicom
from tests.dicom_files import region as _region
from tests.dicom_files import write_dicom as _write


def test_pydicoms_ultrasound_examples():
    cine = get_testdata_file("examples_ybr_color.dcm")  # JPEG baseline, 30 frames, 1 region
    dataset = read_dicom(cine)
    frames = dicom_frames(dataset, cine, frames="all")
    assert len(frames) == 30 and frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8
    assert len(dicom_frames(dataset, cine)) == 1 and len(dicom_frames(dataset, cine, 30)) == 1
    # Its tissue region's box, written for 640 x 480, lies outside the 320 x 240 image.
    with pytest.raises(DicomError, match=r"0018,6011.*outside the 320 x 240 image"):
        dicom_spacing(dataset, cine)
    palette = get_testdata_file("examples_palette.dcm")  # a tissue and an ECG region
    dataset = read_dicom(palette)
    (frame,) = dicom_frames(dataset, palette)
    assert frame.shape == (350, 800, 3) and len(np.unique(frame.reshape(-1, 3), axis=0)) > 10
    with pytest.raises(DicomError, match="outside the 800 x 350 image"):  # one tissue region
        dicom_spacing(dataset, palette)
    rgb = get_testdata_file("examples_rgb_color.dcm")  # no regions, no PixelSpacing
    dataset = read_dicom(rgb)
    assert dicom_spacing(dataset, rgb) is None
    assert dicom_frames(dataset, rgb)[0].shape == (240, 320, 3)


def test_spacing_from_the_tissue_region_in_mm_and_from_pixel_spacing(tmp_path):
    ecg = _region(box=(0, 36, 59, 39), units=(4, 0), delta=(0.01, 0.0), kind=(4, 10))
    path = _write(tmp_path / "region.dcm", regions=[_region(), ecg], pixel_spacing=[0.5, 0.5])
    spacing = dicom_spacing(read_dicom(path), path)
    assert spacing.source == "ultrasound region" and spacing.box == (10, 5, 50, 35)
    assert spacing.spacing == pytest.approx((0.12, 0.1))  # cm -> mm, rows then columns
    edge = _write(tmp_path / "edge.dcm", regions=[_region(box=(0, 0, 60, 40))])
    assert dicom_spacing(read_dicom(edge), edge).box == (0, 0, 59, 39)  # clamped by a pixel
    plain = _write(tmp_path / "plain.dcm", pixel_spacing=[0.2, 0.25])
    spacing = dicom_spacing(read_dicom(plain), plain)
    assert spacing.source == "PixelSpacing" and spacing.spacing == (0.2, 0.25)
    assert spacing.box is None
    assert dicom_spacing(read_dicom(_write(tmp_path / "none.dcm")), "none.dcm") is None
    (frame,) = dicom_frames(read_dicom(plain), plain)
    assert frame.shape == (40, 60) and frame.dtype == np.uint8 and frame[0, 5] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"regions": [_region(), _region()]}, r"0018,6011.*2 2D tissue regions"),
        ({"regions": [_region(units=(4, 4))]}, r"0018,6024.*Received: x 4, y 4"),
        ({"regions": [_region(box=(10, 5, 90, 35))]}, r"\[10, 5, 90, 35\] lies outside"),
        ({"regions": [_region(delta=(0.0, 0.01))]}, r"PhysicalDeltaX \(0018,602C\).*> 0"),
        ({"regions": [_region(delta=(-0.01, 0.01))]}, r"PhysicalDeltaX.*Received: x -0\.01"),
        ({"pixel_spacing": [0.0, 0.2]}, r"PixelSpacing \(0028,0030\).*> 0"),
    ],
)
def test_bad_spacing_is_one_message_naming_the_file_and_tag(tmp_path, kwargs, message):
    path = _write(tmp_path / "bad.dcm", **kwargs)
    with pytest.raises(DicomError, match=message) as caught:
        dicom_spacing(read_dicom(path), path)
    assert str(path) in str(caught.value)


def test_bad_files_and_pixels_are_refused_naming_the_file(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file")
    with pytest.raises(DicomError, match=r"notes\.dcm: not a DICOM file"):
        read_dicom(text)
    whole = _write(tmp_path / "whole.dcm").read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DicomError, match=r"truncated\.dcm: PixelData \(7FE0,0010\).*truncated\?"):
        dicom_frames(read_dicom(truncated), truncated)
    empty = _write(tmp_path / "empty.dcm", pixels=False)
    with pytest.raises(DicomError, match=r"empty\.dcm: no pixel data \(7FE0,0010\)"):
        read_dicom(empty)
    for name, kwargs in (("wide.dcm", {"bits": 16}), ("signed.dcm", {"signed": 1})):
        path = _write(tmp_path / name, **kwargs)
        with pytest.raises(DicomError, match=rf"{name}: BitsAllocated \(0028,0100\)"):
            dicom_frames(read_dicom(path), path)
    cine = _write(tmp_path / "cine.dcm", frames=3)
    assert len(dicom_frames(read_dicom(cine), cine, "all")) == 3
    with pytest.raises(DicomError, match=r"a frame number 1\.\.3\. Received: 4"):
        dicom_frames(read_dicom(cine), cine, 4)


def test_a_transfer_syntax_without_a_decoder_is_named(tmp_path):
    path = _write(tmp_path / "jpegls.dcm")
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not really JPEG-LS"])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(str(path), enforce_file_format=True)
    with pytest.raises(DicomError, match=r"jpegls\.dcm: TransferSyntaxUID \(0002,0010\) JPEG-LS"):
        dicom_frames(read_dicom(path), path)


def _scan() -> np.ndarray:
    """A grey 40 x 60 scan with a bright ellipse, as the tiny run was trained on."""
    rng = np.random.default_rng(3)
    image = (rng.random((40, 60)) * 60).astype(np.uint8)
    cv2.ellipse(image, (30, 20), (14, 8), 10.0, 0, 360, 210, -1)
    return image


def test_predict_reads_a_dicom_and_measures_in_its_millimetres(tiny_run, tmp_path):
    from click.testing import CliRunner

    from cervixnet.cli.main import main
    from cervixnet.measure import measure

    scan = _write(tmp_path / "scan.dcm", regions=[_region(box=(0, 0, 59, 39))], array=_scan())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(tiny_run), str(scan), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader((out / "predictions.csv").open())
    mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (40, 60) and mask.any()
    expected = measure(mask, (0.12, 0.1))  # the region's 0.012 cm x 0.01 cm, in mm
    assert {k: row[k] for k in expected} == {
        k: "" if not np.isfinite(v) else f"{v:.3f}" for k, v in expected.items()
    }
    png = tmp_path / "scan.png"
    cv2.imwrite(str(png), _scan())
    for extra, message in (
        (["--spacing", "0.2"], "gives its own pixel spacing; leave --spacing out"),
        ([str(png)], "scan.png: gives no pixel spacing, while"),
    ):
        refused = CliRunner().invoke(
            main, ["predict", str(tiny_run), str(scan), *extra, "--out", str(tmp_path / "x")]
        )
        assert refused.exit_code == 1 and message in refused.output, refused.output
        assert "Traceback" not in refused.output and not (tmp_path / "x").exists()
    bare = _write(tmp_path / "bare.dcm", array=_scan())  # no spacing: pixels
    result = CliRunner().invoke(
        main, ["predict", str(tiny_run), str(bare), "--out", str(out / "b")]
    )
    assert result.exit_code == 0, result.output
    assert "cervical_length_px" in next(csv.DictReader((out / "b" / "predictions.csv").open()))
