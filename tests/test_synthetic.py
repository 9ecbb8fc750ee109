"""Tests of cervixnet.data.synthetic: determinism, counts, masks, calipers, the label model."""

import collections
import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from cervixnet.data.bezier import parse_points, rasterize
from cervixnet.data.synthetic import SyntheticSpec, generate, load_generator_info
from cervixnet.errors import ConfigError, DataError

SMALL = SyntheticSpec(n_images=24, n_preterm=4, seed=3)
COLUMNS = [
    "image",
    "patient_id",
    "label",
    "mask",
    "lips_mask",
    "bezier",
    "site",
    "risk",
    "cervical_length_mm",
    "canal_length_mm",
    "funnelling",
    "heterogeneity",
    "pixel_spacing_mm",
]


def read_rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("small") / "data", SMALL)


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> Path:
    """The default spec, generated once for the whole module (a few seconds)."""
    return generate(tmp_path_factory.mktemp("default") / "data")


def test_generate_returns_the_manifest_and_writes_the_layout(small):
    assert small.name == "manifest.csv"
    folder = small.parent
    assert (folder / "images").is_dir() and (folder / "masks").is_dir()
    assert (folder / "lips").is_dir()
    assert (folder / "generator.json").is_file()
    with small.open(newline="") as handle:
        assert next(csv.reader(handle)) == COLUMNS


def test_same_seed_is_byte_identical(small, tmp_path):
    again = generate(tmp_path / "again", SMALL)
    first = sorted(p.relative_to(small.parent) for p in small.parent.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again.parent) for p in again.parent.rglob("*") if p.is_file())
    assert first == second
    for name in first:
        assert (small.parent / name).read_bytes() == (again.parent / name).read_bytes(), name


def test_different_seed_differs(small, tmp_path):
    other = generate(tmp_path / "other", SyntheticSpec(n_images=24, n_preterm=4, seed=4))
    assert other.read_bytes() != small.read_bytes()
    first = read_rows(small)[0]["image"]
    assert (small.parent / first).read_bytes() != (other.parent / first).read_bytes()


def test_counts_labels_and_patients(small):
    rows = read_rows(small)
    assert len(rows) == 24
    assert sum(int(r["label"]) for r in rows) == 4
    labels = collections.defaultdict(set)
    risks = collections.defaultdict(set)
    for row in rows:
        labels[row["patient_id"]].add(row["label"])
        risks[row["patient_id"]].add(row["risk"])
    assert all(len(v) == 1 for v in labels.values())  # one label per patient
    assert all(len(v) == 1 for v in risks.values())  # one risk per patient
    per_patient = collections.Counter(r["patient_id"] for r in rows)
    assert max(per_patient.values()) > 1
    assert set(per_patient.values()) <= set(range(1, 5))


def test_files_decode_with_matching_sizes(small):
    rows = read_rows(small)
    sizes = set()
    for row in rows:
        image = cv2.imread(str(small.parent / row["image"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(small.parent / row["mask"]), cv2.IMREAD_UNCHANGED)
        assert image is not None and mask is not None
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert mask.ndim == 2 and mask.dtype == np.uint8
        assert mask.shape == image.shape[:2]
        assert set(np.unique(mask)) == {0, 255}
        assert image.shape[:2] != (256, 256)
        height, width = image.shape[:2]
        assert 300 <= height <= 480 and width == round(height * 4 / 3)
        sizes.add(image.shape)
    assert len(sizes) > 1


def test_masks_match_their_bezier_outlines(small):
    for row in read_rows(small):
        mask = cv2.imread(str(small.parent / row["mask"]), cv2.IMREAD_GRAYSCALE) > 0
        drawn = rasterize(parse_points(row["bezier"]), *mask.shape) > 0
        iou = (mask & drawn).sum() / (mask | drawn).sum()
        assert iou >= 0.99, row["image"]


def _sector(image: np.ndarray) -> np.ndarray:
    """The field of view: the largest part of the non-black pixels, its holes filled."""
    _, parts, stats, _ = cv2.connectedComponentsWithStats(
        (image[..., 1] > 0).astype(np.uint8), connectivity=8
    )
    return ndimage.binary_fill_holes(parts == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def test_the_cervix_is_elongated_and_large(default):
    """Longer than wide along its canal (os to os against across it: measured 1.10 to 2.08,
    median 1.56) and filling a large part of the sector, as a zoomed transvaginal view does
    (measured 4.3 to 50 %, median 26 %; of the image 2.7 to 32 %, median 16 %)."""
    ratios, of_sector, of_image = [], [], []
    for row in read_rows(default):
        mask = cv2.imread(str(default.parent / row["mask"]), cv2.IMREAD_GRAYSCALE) > 0
        image = cv2.imread(str(default.parent / row["image"]))
        external, _, internal, _ = parse_points(row["bezier"])
        along = (external - internal) / np.linalg.norm(external - internal)
        rows, columns = np.nonzero(mask)
        points = np.stack([columns, rows], axis=1)
        length = np.ptp(points @ along) + 1
        width = np.ptp(points @ np.array([-along[1], along[0]])) + 1
        ratios.append(length / width)
        of_sector.append(mask.sum() / _sector(image).sum())
        of_image.append(mask.mean())
    assert min(ratios) > 1.05 and np.median(ratios) > 1.4
    assert min(of_sector) > 0.03 and np.median(of_sector) > 0.2
    assert min(of_image) > 0.02 and max(of_image) < 0.4


def test_cervix_is_brighter_than_its_surroundings(small):
    for row in read_rows(small):
        gray = cv2.imread(str(small.parent / row["image"]))[..., 1].astype(float)
        mask = cv2.imread(str(small.parent / row["mask"]), cv2.IMREAD_GRAYSCALE) > 0
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
        ring &= ~mask
        assert gray[mask].mean() > gray[ring].mean(), row["image"]


def test_calipers_are_pure_yellow_and_green_on_gray_anatomy(default):
    has_yellow = has_green = without = 0
    for row in read_rows(default)[:60]:
        image = cv2.imread(str(default.parent / row["image"]))
        b, g, r = (image[..., i].astype(int) for i in range(3))
        yellow = (b == 0) & (g == 255) & (r == 255)
        green = (b == 0) & (g == 255) & (r == 0)
        gray = (b == g) & (g == r)
        assert np.all(gray | yellow | green), row["image"]
        has_yellow += bool(yellow.any())
        has_green += bool(green.any())
        without += not (yellow.any() or green.any())
    assert has_yellow > 30 and has_green > 10
    assert without > 0  # some images carry no calipers


def test_default_spec_counts_and_best_auc(default):
    rows = read_rows(default)
    assert len(rows) == 354
    labels = [int(r["label"]) for r in rows]
    assert sum(labels) == 35
    patients = {r["patient_id"] for r in rows}
    assert 100 <= len(patients) <= 180
    assert {r["site"] for r in rows} == {"clinic1", "clinic2"}

    info = json.loads((default.parent / "generator.json").read_text())
    assert info["counts"]["images"] == 354
    assert info["counts"]["preterm_images"] == 35
    assert info["counts"]["patients"] == len(patients)
    recomputed = roc_auc_score(labels, [float(r["risk"]) for r in rows])
    assert info["best_auc"] == pytest.approx(recomputed, abs=1e-6)
    assert 0.75 <= info["best_auc"] <= 0.95
    assert set(info["model"]["coefficients"]) == {"b0", "b_L", "b_F", "b_H"}


def test_risk_follows_the_documented_formula(small):
    info = load_generator_info(small.parent)
    assert info is not None
    c = info["model"]["coefficients"]
    spec = info["spec"]
    # Per patient the features jitter per image, so check the formula's direction: shorter
    # cervices carry higher risk on average, and every risk is a probability.
    rows = read_rows(small)
    risks = np.array([float(r["risk"]) for r in rows])
    lengths = np.array([float(r["cervical_length_mm"]) for r in rows])
    assert np.all((risks > 0) & (risks < 1))
    assert np.corrcoef(lengths, risks)[0, 1] < 0
    assert c["b_L"] == spec["coef_length"] > 0


def test_load_generator_info(small, tmp_path):
    info = load_generator_info(small.parent)
    assert info["generator"] == "cervixnet.data.synthetic"
    assert info["spec"]["n_images"] == 24
    assert load_generator_info(small) == info  # the manifest path works too
    assert load_generator_info(tmp_path) is None
    (tmp_path / "generator.json").write_text("{not json")
    assert load_generator_info(tmp_path) is None


def test_refuses_a_non_empty_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("my data")
    with pytest.raises(DataError, match="Refusing to write"):
        generate(tmp_path, SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_a_file(tmp_path):
    target = tmp_path / "file.csv"
    target.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        generate(target, SMALL)


def test_overwrites_its_own_output_and_keeps_user_files(tmp_path):
    folder = tmp_path / "data"
    generate(folder, SMALL)
    (folder / "notes.txt").write_text("mine")
    manifest = generate(folder, SyntheticSpec(n_images=10, n_preterm=2, seed=3))
    assert len(read_rows(manifest)) == 10
    assert len(list((folder / "images").iterdir())) == 10
    assert len(list((folder / "masks").iterdir())) == 10
    assert (folder / "notes.txt").read_text() == "mine"


def test_empty_existing_folder_is_fine(tmp_path):
    assert generate(tmp_path, SyntheticSpec(n_images=3, n_preterm=1)).is_file()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_images": 0}, "n_images"),
        ({"n_preterm": 30, "n_images": 20}, "n_preterm"),
        ({"n_preterm": -1}, "n_preterm"),
        ({"images_per_patient": (0, 3)}, "images_per_patient"),
        ({"images_per_patient": (3, 2)}, "images_per_patient"),
        ({"seed": -1}, "seed"),
        ({"image_heights": ()}, "image_heights"),
        ({"image_heights": (50,)}, "image_heights"),
        ({"caliper_probability": 1.5}, "caliper_probability"),
        ({"n_sites": 0}, "n_sites"),
        ({"length_max_mm": 80.0}, "length_max_mm"),
        ({"heterogeneity_beta": (0.0, 1.0)}, "heterogeneity_beta"),
    ],
)
def test_bad_spec_raises(kwargs, name):
    with pytest.raises(ConfigError, match=f"Received: {name}="):
        SyntheticSpec(**kwargs)


def test_edge_counts_all_control_or_all_preterm(tmp_path):
    rows = read_rows(generate(tmp_path / "a", SyntheticSpec(n_images=5, n_preterm=0)))
    assert [r["label"] for r in rows] == ["0"] * 5
    assert load_generator_info(tmp_path / "a")["best_auc"] is None
    rows = read_rows(generate(tmp_path / "b", SyntheticSpec(n_images=4, n_preterm=4)))
    assert [r["label"] for r in rows] == ["1"] * 4


def test_unreachable_preterm_count_raises(tmp_path):
    spec = SyntheticSpec(n_images=8, n_preterm=2, images_per_patient=(4, 4))
    with pytest.raises(ConfigError, match="cannot make exactly n_preterm=2"):
        generate(tmp_path / "data", spec)
    assert not (tmp_path / "data").exists()  # refused before writing anything


def test_write_clean_adds_clean_images_and_changes_nothing_else(tmp_path: Path):
    plain = generate(tmp_path / "plain", SMALL)
    spec = dataclasses.replace(SMALL, write_clean=True)
    with_clean = generate(tmp_path / "clean", spec)
    with with_clean.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*COLUMNS, "clean_image"]
    for row in rows:
        for column in ("image", "mask"):
            assert (plain.parent / row[column]).read_bytes() == (
                with_clean.parent / row[column]
            ).read_bytes()
        clean = cv2.imread(str(with_clean.parent / row["clean_image"]), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(with_clean.parent / row["image"]), cv2.IMREAD_UNCHANGED)
        assert clean.ndim == 2 and clean.shape == image.shape[:2]
        gray = np.all(image == image[..., :1], axis=2)  # no caliper colour here
        np.testing.assert_array_equal(clean[gray], image[..., 0][gray])


def test_the_lips_split_the_mask_along_a_canal_of_known_length(default):
    """Each cervix is written a second time as two lips, the anterior (id 1, on the probe's
    side) and the posterior (id 2), either side of its canal, whose true length is
    ``canal_length_mm``. The canal measured between the lips
    (``cervixnet.measure.canal_length``) agrees with it (measured over the 354 images: mean
    absolute error 0.28 mm, largest 0.55 mm), and the cervical length of the one-class mask
    with ``cervical_length_mm`` (over all 354: mean +0.19 mm, largest 0.47 mm)."""
    from cervixnet.measure import canal_length, cervical_length

    canal_errors, length_errors = [], []
    for row in read_rows(default):
        mask = cv2.imread(str(default.parent / row["mask"]), cv2.IMREAD_GRAYSCALE)
        lips = cv2.imread(str(default.parent / row["lips_mask"]), cv2.IMREAD_UNCHANGED)
        assert lips.dtype == np.uint8 and set(np.unique(lips)) == {0, 1, 2}, row["image"]
        np.testing.assert_array_equal(lips > 0, mask > 0)  # the same cervix, split
        anterior_rows, posterior_rows = np.nonzero(lips == 1)[0], np.nonzero(lips == 2)[0]
        assert anterior_rows.mean() < posterior_rows.mean(), row["image"]  # nearer the probe
        spacing = float(row["pixel_spacing_mm"])
        canal = canal_length(lips, spacing).value  # NaN where the lips do not meet
        canal_errors.append(canal - float(row["canal_length_mm"]))
        if len(canal_errors) % 3 == 1:  # a third of the images keeps the test short
            measured = cervical_length(mask, spacing).value
            length_errors.append(measured - float(row["cervical_length_mm"]))
    canal_errors, length_errors = np.abs(canal_errors), np.abs(length_errors)
    assert canal_errors.mean() < 0.5 and canal_errors.max() < 1.0, canal_errors.max()
    assert length_errors.mean() < 0.4 and length_errors.max() < 1.0, length_errors.max()


@pytest.mark.slow
def test_a_tiny_two_lip_model_learns_both_lips(tmp_path):
    """A tiny U-Net (8 filters, depth 3, 48 x 64 inputs, 120 steps) trained through
    ``cervixnet.runs.train`` on 24 synthetic images, with ``data.classes: [anterior_lip,
    posterior_lip]`` and ``data.mask_column: lips_mask``, reaches a Dice of 0.76 and 0.77 on
    the lips of its 5 test images (measured; bound 0.45). Chance is about 0.15: each lip covers
    about 8 % of an image, and predicting a lip everywhere scores 2p / (1 + p)."""
    from cervixnet.config import load_config
    from cervixnet.runs import train

    data = tmp_path / "data"
    generate(data, SyntheticSpec(n_images=24, n_preterm=4, seed=1))
    config = load_config(
        overrides={
            "arch": "unet",
            "data.path": str(data),
            "data.classes": ["anterior_lip", "posterior_lip"],
            "data.mask_column": "lips_mask",
            "data.image_size": [48, 64],
            "data.augment.crop": 0.0,
            "data.augment.rotation_degrees": 0,
            "model.base_filters": 8,
            "model.unet": {"depth": 3},
            "training.batch_size": 8,
            "training.steps": 120,
            "training.learning_rate": 0.01,
            "evaluation.tta": False,
            "evaluation.largest_component": False,
        }
    )
    result = train(
        config, tmp_path / "run", cache_root=tmp_path / "cache", verbose=0, echo=lambda _: None
    )
    classes = result.metrics["splits"]["test"]["segmentation"]["classes"]
    assert list(classes) == ["anterior_lip", "posterior_lip"]
    for name, figures in classes.items():
        assert figures["dice_mean"] > 0.45, (name, figures)
