"""Tests of cervixnet.data.prepare: calipers, masks from Bézier annotators, formats, report."""

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cervixnet.config import load_config
from cervixnet.data import bezier
from cervixnet.data.letterbox import fit_image, letterbox_geometry
from cervixnet.data.manifest import read_manifest
from cervixnet.data.prepare import (
    fuse_masks,
    is_prepared,
    mean_pairwise_iou,
    prepare,
    prepare_record,
    read_image,
)
from cervixnet.data.splits import Splits, split_patients
from cervixnet.data.synthetic import SyntheticSpec, generate
from cervixnet.errors import ConfigError, DataError
from tests.conftest import rewrite_manifest

SIZE = (64, 64)


def config(**overrides):
    return load_config(overrides={"data.image_size": list(SIZE), **overrides})


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A small synthetic set with calipers and the clean images underneath."""
    folder = tmp_path_factory.mktemp("synthetic") / "data"
    generate(folder, SyntheticSpec(n_images=16, n_preterm=3, seed=5, write_clean=True))
    return folder


def test_synthetic_calipers_are_gone_and_filled_close_to_the_clean_image(
    synthetic: Path, tmp_path: Path
):
    before = tree_digest(synthetic)
    prepared = prepare(synthetic, tmp_path / "prepared", config())
    assert tree_digest(synthetic) == before  # the source is only read
    rows = read_manifest(prepared)
    source = {r.row: r for r in read_manifest(synthetic).records}
    checked = 0
    for record in rows.records:
        image = read_image(record.image)
        assert image.shape == SIZE and image.dtype == np.uint8  # gray: no colour can remain
        original = source[int(record.extra["source_row"])]
        raw = read_image(original.image)
        marks = (np.all(raw == (0, 255, 255), axis=2) | np.all(raw == (0, 255, 0), axis=2)).astype(
            np.uint8
        )
        assert (int(record.extra["filled_pixels"]) > 0) == bool(marks.any())
        if not marks.any():
            continue
        clean = read_image(synthetic / original.extra["clean_image"])
        # At the source resolution the marks are filled within speckle of the clean image.
        full = prepare_record(original, raw.shape[:2])
        pure = marks > 0
        filled_error = np.abs(full.image.astype(int) - clean)[pure].mean()
        marked_error = np.abs(cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY).astype(int) - clean)[pure]
        assert filled_error < 25 and filled_error < 0.6 * marked_error.mean()
        # The prepared (resized) image is the clean image resized, up to a gray level or two.
        clean_small = fit_image(clean, SIZE).astype(int)  # letterboxed: area, zero padding
        assert np.abs(image.astype(int) - clean_small).mean() < 1.0
        assert np.abs(image.astype(int) - clean_small).max() < 40
        checked += 1
    assert checked >= 5


def test_bezier_masks_match_the_generators_masks(synthetic: Path, tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    for sub in ("images",):
        (data / sub).symlink_to(synthetic / sub)

    def drop_masks(fields, rows):
        for row in rows:
            row["mask"] = ""
        return fields, rows

    (data / "manifest.csv").write_bytes((synthetic / "manifest.csv").read_bytes())
    rewrite_manifest(data / "manifest.csv", drop_masks)
    from_points = read_manifest(prepare(data, tmp_path / "from_points", config()))
    from_files = read_manifest(prepare(synthetic, tmp_path / "from_files", config()))
    for a, b in zip(from_points.records, from_files.records, strict=True):
        assert a.extra["mask_source"] == "bezier" and b.extra["mask_source"] == "file"
        assert iou(read_image(a.mask), read_image(b.mask)) >= 0.98
    # At full resolution the rasterised points are the generator's masks.
    for record in read_manifest(synthetic).records[:5]:
        height, width = read_image(record.image).shape[:2]
        points = bezier.parse_points(record.extra["bezier"])
        assert iou(bezier.rasterize(points, height, width), read_image(record.mask)) >= 0.98


def test_bezier_points_follow_the_resize(synthetic: Path, tmp_path: Path):
    prepared = read_manifest(prepare(synthetic, tmp_path / "p", config()))
    for record in prepared.records[:4]:
        points = bezier.parse_points(record.extra["bezier"])
        redrawn = bezier.rasterize(points, *SIZE)
        # A thin cervix, a few pixels across at this size: its edge pixels weigh (0.85 seen).
        assert iou(redrawn, read_image(record.mask)) >= 0.8


def _annotated_dataset(folder: Path, annotations: list[str], mask: bool = False) -> Path:
    """One image per row, 40 x 60 gray; ``annotations`` gives each row's bezier cell."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for k, text in enumerate(annotations):
        cv2.imwrite(str(folder / "images" / f"i{k}.png"), np.full((40, 60), 90, np.uint8))
        rows.append(
            {
                "image": f"images/i{k}.png",
                "patient_id": f"p{k}",
                "label": str(k % 2),
                "mask": "",
                "bezier": text,
            }
        )
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


A = "10,10 30,8 32,30 12,32"
B = "14,10 34,8 36,30 16,32"  # A moved 4 px right
C = "30,5 50,5 50,25 30,25"  # mostly apart from A and B


@pytest.mark.parametrize("fusion", ["majority", "union", "intersection"])
def test_annotators_are_fused_and_their_agreement_recorded(tmp_path: Path, fusion: str):
    data = _annotated_dataset(tmp_path / "data", [f"{A};{B};{C}", A, ""])
    before = tree_digest(data)
    prepared = read_manifest(
        prepare(
            data,
            tmp_path / fusion,
            load_config(overrides={"data.image_size": [40, 60], "data.annotations.fusion": fusion}),
        )
    )
    assert tree_digest(data) == before
    masks = [bezier.rasterize(bezier.parse_points(t), 40, 60) for t in (A, B, C)]
    votes = np.sum(masks, axis=0)
    expected = {"majority": votes >= 2, "union": votes >= 1, "intersection": votes == 3}[fusion]
    three, one, none = prepared.records
    np.testing.assert_array_equal(read_image(three.mask) > 0, expected)
    pairwise = np.mean([iou(masks[0], masks[1]), iou(masks[0], masks[2]), iou(masks[1], masks[2])])
    assert float(three.extra["inter_annotator_iou"]) == pytest.approx(pairwise, abs=1e-4)
    assert three.extra["annotators"] == "3" and three.extra["mask_source"] == "bezier"
    assert one.extra["inter_annotator_iou"] == "" and one.extra["annotators"] == "1"
    np.testing.assert_array_equal(read_image(one.mask), masks[0] * 255)
    # A row with neither mask nor points keeps no mask: it trains the label head only.
    assert none.mask is None and none.extra["mask_source"] == "none"
    report = json.loads((tmp_path / fusion / "report.json").read_text())
    assert report["inter_annotator_iou"]["images"] == 1
    assert report["inter_annotator_iou"]["mean"] == pytest.approx(pairwise, abs=1e-4)
    assert report["mask_source"] == {"file": 0, "bezier": 2, "none": 1}


def test_chord_reading_is_used_when_configured(tmp_path: Path):
    data = _annotated_dataset(tmp_path / "data", [A])
    settings = {"data.image_size": [40, 60], "data.annotations.reading": "chord"}
    record = read_manifest(prepare(data, tmp_path / "p", load_config(overrides=settings))).records[
        0
    ]
    chord = bezier.rasterize(bezier.parse_points(A), 40, 60, mode="chord")
    smooth = bezier.rasterize(bezier.parse_points(A), 40, 60, mode="smooth")
    assert not np.array_equal(chord, smooth)
    np.testing.assert_array_equal(read_image(record.mask) > 0, chord > 0)


def test_fuse_and_agreement_helpers():
    a = np.array([[1, 1, 0, 0]], np.uint8)
    b = np.array([[1, 0, 1, 0]], np.uint8)
    c = np.array([[1, 1, 1, 0]], np.uint8)
    np.testing.assert_array_equal(fuse_masks([a, b, c]), [[1, 1, 1, 0]])
    np.testing.assert_array_equal(fuse_masks([a, b]), [[1, 0, 0, 0]])  # majority of 2: both
    np.testing.assert_array_equal(fuse_masks([a, b], "union"), [[1, 1, 1, 0]])
    np.testing.assert_array_equal(fuse_masks([a, b, c], "intersection"), [[1, 0, 0, 0]])
    assert mean_pairwise_iou([a, b]) == pytest.approx(1 / 3)
    assert np.isnan(mean_pairwise_iou([a]))
    with pytest.raises(ValueError, match="fusion='vote'"):
        fuse_masks([a], "vote")


def _write(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix, array)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    data.tofile(str(path))


def test_image_formats_depths_channels_and_paths(tmp_path: Path):
    """PNG, JPEG, BMP, TIFF; 8 and 16 bit; gray, BGR, BGRA; spaces and non-ASCII names."""
    data = tmp_path / "données brutes"
    rng = np.random.default_rng(0)

    def gray(shape, dtype=np.uint8):
        top = np.iinfo(dtype).max
        return rng.integers(0, top, shape[:2], dtype=dtype, endpoint=True)

    def colour(shape, dtype=np.uint8):  # gray anatomy stored as colour, as scanners export it
        return np.repeat(gray(shape, dtype)[..., None], shape[2], axis=2)

    cases = [
        ("scan one.png", gray((50, 70))),
        ("échographie.jpg", colour((60, 80, 3))),
        ("子宫颈.bmp", colour((45, 45, 3))),
        ("tiff 16.tif", gray((64, 48), np.uint16)),
        ("rgba.png", colour((40, 90, 4))),
        ("deep colour.tiff", colour((30, 30, 3), np.uint16)),
    ]
    rows = []
    for k, (name, array) in enumerate(cases):
        _write(data / "images" / name, array)
        mask = np.zeros(array.shape[:2], np.uint8)
        mask[5:20, 5:25] = 255
        _write(data / "masks" / f"{Path(name).stem}.png", mask)
        rows.append(
            {
                "image": f"images/{name}",
                "patient_id": f"p{k}",
                "label": str(k % 2),
                "mask": f"masks/{Path(name).stem}.png",
            }
        )
    with (data / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    before = tree_digest(data)
    prepared = read_manifest(
        prepare(data, tmp_path / "prêt", load_config(overrides={"data.image_size": [32, 32]}))
    )
    assert tree_digest(data) == before
    for (name, array), record in zip(cases, prepared.records, strict=True):
        image = read_image(record.image)
        assert image.shape == (32, 32)
        assert image.dtype == array.dtype  # 16-bit stays 16-bit
        assert record.extra["source_image"] == f"images/{name}"
        height, width = array.shape[:2]
        assert record.extra["source_size"] == f"{width}x{height}"
        mask = read_image(record.mask)
        assert set(np.unique(mask)) == {0, 255}
        stored = read_image(data / "images" / name)  # JPEG is lossy: compare with what it holds
        plain = stored if stored.ndim == 2 else cv2.cvtColor(stored[..., :3], cv2.COLOR_BGR2GRAY)
        # Documented: letterboxed, area interpolation when shrinking, bilinear when enlarging.
        box = letterbox_geometry((height, width), (32, 32))
        method = cv2.INTER_AREA if box.scale < 1 else cv2.INTER_LINEAR
        (content_h, content_w), top, left = box.content_size, box.top, box.left
        expected = np.zeros((32, 32), plain.dtype)
        expected[top : top + content_h, left : left + content_w] = cv2.resize(
            plain, (content_w, content_h), interpolation=method
        )
        tolerance = 1 if array.dtype == np.uint8 else 256
        assert np.abs(image.astype(int) - expected.astype(int)).max() <= tolerance


def test_prepared_folder_has_split_report_and_marker(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    manifest = read_manifest(prepare(tiny_dataset, out, config(seed=3)))
    assert is_prepared(out) and not is_prepared(tiny_dataset)
    saved = Splits.load(out / "splits.json")
    same = split_patients(manifest, (0.6, 0.2, 0.2), seed=3)
    assert (saved.train, saved.val, saved.test) == (same.train, same.val, same.test)
    report = json.loads((out / "report.json").read_text())
    assert report["total"]["images"] == 20 and report["total"]["preterm"] == 10
    assert sum(report["splits"][s]["images"] for s in ("train", "val", "test")) == 20
    assert report["sites"]["A"]["patients"] == 10
    assert "| train |" in (out / "report.md").read_text()
    info = json.loads((out / "prepared.json").read_text())
    assert info["image_size"] == list(SIZE) and info["seed"] == 3


def test_refuses_a_non_empty_out_folder(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        prepare(tiny_dataset, out, config())
    assert (out / "keep.txt").read_text() == "mine"


def test_invalid_source_is_refused_before_anything_is_written(tiny_dataset: Path, tmp_path: Path):
    def break_row(fields, rows):
        rows[2]["label"] = "maybe"
        return fields, rows

    rewrite_manifest(tiny_dataset / "manifest.csv", break_row)
    with pytest.raises(DataError, match="row 4, column 'label'"):
        prepare(tiny_dataset, tmp_path / "out", config())
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]


def test_calipers_can_be_left_in(tmp_path: Path):
    image = np.full((30, 30, 3), 80, np.uint8)
    image[10, 5:25] = (0, 255, 255)
    _write(tmp_path / "images" / "a.png", image)
    with (tmp_path / "manifest.csv").open("w") as handle:
        handle.write("image,patient_id,label,mask\nimages/a.png,p1,0,\n")
    record = read_manifest(tmp_path).records[0]
    kept = prepare_record(
        record, (30, 30), calipers=config(**{"data.calipers.enabled": False}).data.calipers
    )
    removed = prepare_record(record, (30, 30))
    assert kept.filled_pixels == 0 and removed.filled_pixels > 20
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(kept.image, gray)
    assert np.abs(removed.image.astype(int) - 80).max() <= 2


def test_cached_copy_is_reused_until_the_data_or_settings_change(
    tiny_dataset: Path, tmp_path: Path
):
    from cervixnet.data.sources import prepared_data

    cache = tmp_path / "cache"
    source = tiny_dataset / "manifest.csv"
    messages: list[str] = []
    first = prepared_data(config(), source, cache, echo=messages.append)
    assert len(messages) == 1 and "Preparing" in messages[0]
    assert prepared_data(config(), source, cache, echo=messages.append) == first
    assert len(messages) == 1  # reused, nothing prepared
    other_size = prepared_data(config(**{"data.image_size": [32, 32]}), source, cache)
    assert other_size != first
    image = tiny_dataset / "images" / "p00_0.png"
    cv2.imwrite(str(image), np.zeros((48, 64), np.uint8))  # the clinic re-exports an image
    changed = prepared_data(config(), source, cache)
    assert changed != first
    assert read_image(read_manifest(changed).records[0].image).max() == 0
    # A prepared folder is used as it is.
    assert prepared_data(config(), first, cache) == first


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_the_pixel_spacing_follows_the_resize(synthetic: Path, tmp_path: Path, resize: str):
    source = read_manifest(synthetic / "manifest.csv")
    prepared = read_manifest(prepare(synthetic, tmp_path / "p", config(**{"data.resize": resize})))
    with (prepared.path).open(newline="") as handle:
        assert "pixel_spacing_mm" not in (csv.DictReader(handle).fieldnames or [])
    for original, record in zip(source.records, prepared.records, strict=True):
        assert record.native_spacing == pytest.approx(original.spacing, rel=1e-8)
        height, width = read_image(original.image).shape[:2]
        box = letterbox_geometry((height, width), SIZE, resize)
        content_height, content_width = box.content_size
        dy, dx = original.spacing
        expected = (dy * height / content_height, dx * width / content_width)
        assert record.spacing == pytest.approx(expected, rel=1e-8)
        # A physical length is the same at both sizes: the image's height in mm.
        assert record.spacing[0] * content_height == pytest.approx(dy * height, rel=1e-8)
    stretched = [r.spacing[0] != pytest.approx(r.spacing[1]) for r in prepared.records]
    assert any(stretched) == (resize == "stretch")
