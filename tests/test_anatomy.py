"""Class-id masks (``data.classes``) through the whole library: validation of each mask file,
prepare, training, evaluate, predict, export and Grad-CAM."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cervixnet import measure, metrics
from cervixnet.config import load_config
from cervixnet.data.manifest import read_manifest
from cervixnet.errors import ConfigError, DataError
from tests.conftest import TINY_RUN_CONFIG

LIPS = ["anterior_lip", "posterior_lip"]
SPACING_MM = 0.25
# The tiny run of the other tests, with two lips at 32 x 48.
TWO_LIP_RUN = {
    **TINY_RUN_CONFIG,
    "data.classes": LIPS,
    "data.mask_column": "lips_mask",
    "data.image_size": [32, 48],
}


def write_two_lip_dataset(folder: Path, n_patients: int = 12, images_per_patient: int = 2) -> Path:
    """Writes images of an elongated bright body split along its long axis into an upper
    (class 1) and a lower lip (class 2) of different brightness; ``mask`` is their union
    (0/255), ``lips_mask`` the class ids, with the canal's length in mm. Returns the manifest."""
    rng = np.random.default_rng(0)
    for name in ("images", "masks", "lips"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for patient in range(n_patients):
        for k in range(images_per_patient):
            height, width = 48 + 8 * (k % 2), 72
            ids = np.zeros((height, width), np.uint8)
            top, left = int(rng.integers(8, height - 30)), int(rng.integers(4, 16))
            right = left + int(rng.integers(36, 52))
            ids[top : top + 10, left:right] = 1
            ids[top + 10 : top + 20, left:right] = 2
            gray = (rng.random((height, width)) * 50).astype(np.uint8)
            gray[ids == 1] += 190
            gray[ids == 2] += 110
            name = f"p{patient:02d}_{k}.png"
            cv2.imwrite(str(folder / "images" / name), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
            cv2.imwrite(str(folder / "masks" / name), (ids > 0).astype(np.uint8) * 255)
            cv2.imwrite(str(folder / "lips" / name), ids)
            canal = measure.canal_length(ids, SPACING_MM).value
            rows.append(
                {
                    "image": f"images/{name}",
                    "patient_id": f"p{patient:02d}",
                    "label": str(patient % 2),
                    "mask": f"masks/{name}",
                    "lips_mask": f"lips/{name}",
                    "pixel_spacing_mm": str(SPACING_MM),
                    "canal_length_mm": f"{canal:.2f}",
                }
            )
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def two_lip_run(tmp_path_factory) -> Path:
    """A joint model of two lips, trained for two epochs on a tiny data set: its run folder."""
    from cervixnet.runs import train

    folder = tmp_path_factory.mktemp("two-lip-run")
    write_two_lip_dataset(folder / "data")
    config = load_config(overrides={**TWO_LIP_RUN, "data.path": str(folder / "data")})
    train(config, folder / "run", verbose=0, echo=lambda _: None)
    return folder / "run"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _mask_ids(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# Masks in, as data.classes says


def test_prepare_keeps_the_class_ids_of_the_mask_column(tmp_path: Path):
    from cervixnet.data.prepare import load_prepared_info, prepare

    write_two_lip_dataset(tmp_path / "data", n_patients=4)
    config = load_config(overrides=TWO_LIP_RUN)
    prepared = read_manifest(prepare(tmp_path / "data", tmp_path / "prepared", config))
    for record in prepared.records:
        source = _mask_ids(tmp_path / "data" / "lips" / Path(record.extra["source_image"]).name)
        native = _mask_ids(prepared.root / record.extra["native_mask"])
        np.testing.assert_array_equal(native, source)  # the scan's own ids, unchanged
        fitted = _mask_ids(record.mask)
        assert fitted.shape == (32, 48) and set(np.unique(fitted)) == {0, 1, 2}
    assert load_prepared_info(prepared.root)["classes"] == LIPS
    one_class = load_config(overrides={"data.image_size": [32, 48]})  # the default: 0/255
    binary = read_manifest(prepare(tmp_path / "data", tmp_path / "binary", one_class))
    assert set(np.unique(_mask_ids(binary.records[0].mask))) == {0, 255}


def _edit_first_lips_mask(manifest: Path, edit) -> Path:
    path = manifest.parent / "lips" / "p00_0.png"
    cv2.imwrite(str(path), edit(_mask_ids(path)))
    return path


def test_a_class_id_beyond_the_classes_is_refused_naming_the_file(tmp_path: Path):
    manifest = write_two_lip_dataset(tmp_path / "data", n_patients=2)
    _edit_first_lips_mask(manifest, lambda ids: np.where(ids == 2, 3, ids).astype(np.uint8))
    with pytest.raises(DataError) as error:
        read_manifest(manifest, decode=True, mask_column="lips_mask", classes=LIPS)
    message = str(error.value)
    assert "row 2" in message and "lips_mask" in message and "lips/p00_0.png" in message
    assert "class ids beyond the 2 classes" in message and "e.g. 3" in message
    with pytest.raises(DataError, match=r"not a binary mask.*name its classes in data\.classes"):
        read_manifest(manifest, decode=True, mask_column="lips_mask")  # one class: 0, 1, 255


def test_a_class_in_no_mask_is_refused_naming_the_class(tmp_path: Path):
    manifest = write_two_lip_dataset(tmp_path / "data", n_patients=2)
    three = [*LIPS, "canal"]
    with pytest.raises(DataError, match=r"class 3 \(canal\) appears in no mask"):
        read_manifest(manifest, decode=True, mask_column="lips_mask", classes=three)
    for path in (manifest.parent / "lips").iterdir():
        cv2.imwrite(str(path), np.minimum(_mask_ids(path), 1))  # every posterior lip gone
    with pytest.raises(DataError) as error:
        read_manifest(manifest, decode=True, mask_column="lips_mask", classes=LIPS)
    message = str(error.value)
    assert str(manifest.resolve()) in message
    assert "class 2 (posterior_lip) appears in no mask" in message


def test_a_mask_of_the_wrong_size_or_column_is_refused_naming_the_file(tmp_path: Path):
    manifest = write_two_lip_dataset(tmp_path / "data", n_patients=2)
    _edit_first_lips_mask(manifest, lambda ids: ids[:-4])
    with pytest.raises(DataError, match=r"lips_mask.*the mask is 72x44 pixels but its image is "
                                        r"72x48: lips/p00_0\.png"):  # fmt: skip
        read_manifest(manifest, decode=True, mask_column="lips_mask", classes=LIPS)
    with pytest.raises(DataError, match=r"missing required column.*anatomy"):
        read_manifest(manifest, mask_column="anatomy", classes=LIPS)


@pytest.mark.parametrize(
    ("classes", "message"),
    [([], "a list of distinct class names"), (["lip", "lip"], "distinct"),
     (["background", "lip"], "'background' is class 0"), (["anterior lip"], "letters, digits")],
)  # fmt: skip
def test_bad_class_names_are_refused_with_what_was_received(classes, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config(overrides={"data.classes": classes})
    assert "data.classes" in str(error.value) and "Received" in str(error.value)


def test_a_prepared_copy_of_other_classes_is_refused(tmp_path: Path):
    from cervixnet.data.prepare import prepare
    from cervixnet.data.sources import prepared_data

    write_two_lip_dataset(tmp_path / "data", n_patients=2)
    manifest = prepare(tmp_path / "data", tmp_path / "prepared", load_config(overrides=TWO_LIP_RUN))
    expected = r"prepared with the classes \['anterior_lip', 'posterior_lip'\], but data.classes"
    with pytest.raises(ConfigError, match=expected + r" is \['cervix'\]"):
        prepared_data(load_config(overrides={"data.image_size": [32, 48]}), manifest)


def _bezier_row(folder: Path, cell: str) -> Path:
    """A one-image data set (two patients) whose annotations are ``cell``."""
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "a.png"), np.full((40, 60), 90, np.uint8))
    cv2.imwrite(str(folder / "images" / "b.png"), np.full((40, 60), 90, np.uint8))
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "patient_id", "label", "mask", "bezier"])
        writer.writerow(["images/a.png", "p1", "0", "", cell])
        writer.writerow(["images/b.png", "p2", "1", "", cell])
    return manifest


def test_bezier_annotations_name_their_class_and_are_fused_per_class(tmp_path: Path):
    from cervixnet.data import bezier
    from cervixnet.data.prepare import prepare

    upper = ["10,8 30,4 50,8 30,16", "12,8 30,5 48,8 30,15"]  # two annotators of one lip
    lower = "10,24 30,18 50,24 30,34"
    cell = f"anterior_lip: {upper[0]}; posterior_lip: {lower}; anterior_lip: {upper[1]}"
    _bezier_row(tmp_path / "data", cell)
    config = load_config(overrides={"data.classes": LIPS, "data.image_size": [40, 60]})
    prepared = read_manifest(prepare(tmp_path / "data", tmp_path / "prepared", config))
    record = prepared.records[0]
    ids = _mask_ids(prepared.root / record.extra["native_mask"])
    first, second = (bezier.rasterize(bezier.parse_points(p), 40, 60) for p in upper)
    np.testing.assert_array_equal(ids == 1, (first > 0) & (second > 0))  # majority of two
    np.testing.assert_array_equal(
        ids == 2, bezier.rasterize(bezier.parse_points(lower), 40, 60) > 0
    )
    union = np.count_nonzero((first > 0) | (second > 0))
    agreement = np.count_nonzero((first > 0) & (second > 0)) / union
    assert float(record.extra["inter_annotator_iou"]) == pytest.approx(agreement, abs=1e-4)
    assert record.extra["annotators"] == "2" and record.extra["mask_source"] == "bezier"
    names = [part.split(":")[0].strip() for part in record.extra["bezier"].split(";")]
    assert names == ["anterior_lip", "posterior_lip", "anterior_lip"]  # kept, points moved


@pytest.mark.parametrize(
    ("cell", "message"),
    [("10,8 30,4 50,8 30,16", "each annotation names its class"),
     ("canal: 10,8 30,4 50,8 30,16", "unknown class 'canal'"),
     ("anterior lip: 10,8 30,4 50,8 30,16", "must be a name")],
)  # fmt: skip
def test_a_bezier_annotation_of_no_or_an_unknown_class_is_refused(tmp_path, cell, message):
    manifest = _bezier_row(tmp_path / "data", cell)
    with pytest.raises(DataError, match=message) as error:
        read_manifest(manifest, decode=True, classes=LIPS)
    assert "row 2, column 'bezier'" in str(error.value)


# The streaming metric of training


def test_the_training_metric_averages_each_images_class_scores():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (4, 8, 8, 1)).astype(np.float32)
    logits = rng.normal(size=(4, 8, 8, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = metrics.class_scores_per_image(truth, probabilities, classes=2)
    for metric, key in ((metrics.PerImageDice(classes=2), "dice"),
                        (metrics.PerImageIoU(classes=2), "iou")):  # fmt: skip
        metric.update_state(truth, probabilities)
        np.testing.assert_allclose(float(metric.result()), expected[key].mean(), rtol=1e-5)


# A two-lip run, end to end


def test_a_two_lip_run_scores_each_class(two_lip_run: Path):
    import keras

    model = keras.models.load_model(two_lip_run / "model.keras")  # no custom objects
    assert model.get_layer("mask").output.shape[-1] == 3
    figures = json.loads((two_lip_run / "metrics.json").read_text())
    segmentation = figures["splits"]["test"]["segmentation"]
    assert list(segmentation["classes"]) == LIPS
    rows = [r for r in _rows(two_lip_run / "predictions.csv") if r["split"] == "test"]
    dice = np.array([[float(r[f"dice_{c}"]) for c in LIPS] for r in rows])
    assert np.all((dice >= 0) & (dice <= 1))
    for k, name in enumerate(LIPS):
        assert segmentation["classes"][name]["dice_mean"] == pytest.approx(
            dice[:, k].mean(), abs=1e-5
        )
    assert segmentation["class_dice_mean"] == pytest.approx(dice.mean(), abs=1e-5)


def test_evaluate_reports_each_class_with_intervals_and_the_canal(two_lip_run, tmp_path):
    from cervixnet.reporting import evaluate_run

    result = evaluate_run(
        two_lip_run, out_dir=tmp_path / "eval", n_bootstrap=50, echo=lambda _: None
    )
    segmentation = result.report["segmentation"]
    assert segmentation["classes"] == LIPS
    rows = _rows(tmp_path / "eval" / "predictions.csv")
    for name in LIPS:
        figure = segmentation[f"dice_{name}"]
        per_image = np.array([float(r[f"dice_{name}"]) for r in rows])
        assert figure["value"] == pytest.approx(per_image.mean(), abs=1e-5)
        assert figure["ci_low"] <= figure["value"] <= figure["ci_high"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| anterior_lip |" in report and "| mean of the classes |" in report
    assert "canal_length_mm" in rows[0] and "canal_length_mm" in result.report["measurements"]
    assert (tmp_path / "eval" / "segmentation_overlays.png").is_file()


def test_predict_writes_class_id_masks_and_the_canal_length(two_lip_run, tmp_path):
    from cervixnet.inference import manifest_images, predict_files

    scans, spacings = manifest_images(two_lip_run.parent / "data")
    table = predict_files(two_lip_run, scans, tmp_path / "out", spacings=spacings)
    rows = _rows(table)
    assert len(rows) == 24
    for row in rows:
        ids = _mask_ids(tmp_path / "out" / row["mask"])
        assert ids.shape == (int(row["height"]), int(row["width"]))
        assert set(np.unique(ids)) <= {0, 1, 2}
        assert int(row["pixels_anterior_lip"]) == np.count_nonzero(ids == 1)
        assert int(row["pixels_anterior_lip"]) + int(row["pixels_posterior_lip"]) == int(
            row["mask_pixels"]
        )
        expected = measure.canal_length(ids, SPACING_MM).value
        got = float(row["canal_length_mm"]) if row["canal_length_mm"] else float("nan")
        assert got == pytest.approx(expected, abs=1e-3, nan_ok=True)
    overlay = cv2.imread(str(tmp_path / "out" / "overlays" / Path(rows[0]["mask"]).name))
    assert overlay.shape[:2] == (int(rows[0]["height"]), int(rows[0]["width"]))


def test_the_export_returns_per_class_probabilities_named_in_its_metadata(two_lip_run, tmp_path):
    import tensorflow as tf

    from cervixnet.export import export_savedmodel
    from cervixnet.inference import predict_files

    result = export_savedmodel(two_lip_run, tmp_path / "export")  # verified against Keras
    assert result.metadata["classes"] == ["background", *LIPS]
    served = tf.saved_model.load(str(result.path)).signatures
    images = np.random.default_rng(0).random((2, 32, 48, 1), dtype=np.float32)
    mask = served["serving_default"](images=tf.constant(images))["mask"].numpy()
    assert mask.shape == (2, 32, 48, 3)
    np.testing.assert_allclose(mask.sum(-1), 1.0, atol=1e-5)
    png = tf.io.encode_png(np.zeros((50, 70, 1), np.uint8)).numpy()
    from_bytes = served["predict_image_bytes"](image_bytes=tf.constant([png]))
    assert from_bytes["mask"].shape == (1, 32, 48, 3)
    scans = sorted((two_lip_run.parent / "data" / "images").glob("*.png"))[:3]
    run_table = _rows(predict_files(two_lip_run, scans, tmp_path / "from-run"))
    export_table = _rows(predict_files(tmp_path / "export", scans, tmp_path / "from-export"))
    for mine, theirs in zip(run_table, export_table, strict=True):
        a = _mask_ids(tmp_path / "from-run" / mine["mask"])
        b = _mask_ids(tmp_path / "from-export" / theirs["mask"])
        assert np.mean(a != b) < 0.01  # the same ids but for float ties


def test_the_onnx_export_predicts_the_same_class_ids(two_lip_run, tmp_path):
    from cervixnet.export import export_onnx
    from cervixnet.inference import predict_files

    result = export_onnx(two_lip_run, tmp_path / "lips.onnx")  # verified against Keras
    assert result.metadata["classes"] == ["background", *LIPS]
    scans = sorted((two_lip_run.parent / "data" / "images").glob("*.png"))[:3]
    run_table = _rows(predict_files(two_lip_run, scans, tmp_path / "from-run"))
    onnx_table = _rows(predict_files(tmp_path / "lips.onnx", scans, tmp_path / "from-onnx"))
    assert "pixels_posterior_lip" in onnx_table[0]  # the class names came with the file
    for mine, theirs in zip(run_table, onnx_table, strict=True):
        a = _mask_ids(tmp_path / "from-run" / mine["mask"])
        b = _mask_ids(tmp_path / "from-onnx" / theirs["mask"])
        assert np.mean(a != b) < 0.01


def test_gradcam_still_explains_the_label_of_a_two_lip_model(two_lip_run, tmp_path):
    from cervixnet.inference import explain_files

    scans = sorted((two_lip_run.parent / "data" / "images").glob("*.png"))[:2]
    written = explain_files(two_lip_run, scans, tmp_path / "cam")
    assert len(written) == 2 and all(cv2.imread(str(p)) is not None for p in written)
