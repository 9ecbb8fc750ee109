"""`cervixnet evaluate`: the report, its figures against scikit-learn, the operating point."""

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import jaccard_score, roc_auc_score

from cervixnet.cli.main import main
from cervixnet.config import load_config
from cervixnet.data.manifest import read_manifest
from cervixnet.data.splits import Splits
from cervixnet.errors import ConfigError
from cervixnet.reporting import evaluate_run
from tests.conftest import rewrite_manifest, write_tiny_dataset

FIGURES = (
    "roc",
    "precision_recall",
    "confusion_matrix",
    "calibration",
    "training_curves",
    "segmentation_overlays",
)


@pytest.fixture(scope="module")
def evaluated(tiny_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluation") / "report"
    result = CliRunner().invoke(
        main, ["evaluate", str(tiny_run), "--out", str(out), "--bootstrap", "200", "--gradcam", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "AUC" in result.output.upper() and "95 % CI" in result.output
    return out


def test_report_and_every_plot_are_written(evaluated: Path):
    report = json.loads((evaluated / "report.json").read_text())
    assert report["split"] == "test"
    for name in FIGURES:
        image = cv2.imread(str(evaluated / f"{name}.png"))
        assert image is not None and image.shape[0] > 100, name
        assert (evaluated / f"{name}.pdf").read_bytes().startswith(b"%PDF"), name
    assert len(list((evaluated / "gradcam").glob("*.png"))) == 2
    markdown = (evaluated / "report.md").read_text()
    assert "## Segmentation" in markdown and "## Classification" in markdown
    assert "chosen on the validation split" in markdown and "roc.png" in markdown
    for key in ("iou", "dice", "hd95"):
        figure = report["segmentation"][key]
        assert figure["ci_low"] <= figure["value"] <= figure["ci_high"]
    cm = report["classification"]["confusion_matrix"]
    assert sum(cm.values()) == report["classification"]["n_images"]


def test_figures_agree_with_scikit_learn(evaluated: Path, tiny_run: Path):
    report = json.loads((evaluated / "report.json").read_text())
    rows = list(csv.DictReader((evaluated / "predictions.csv").open()))
    labels = np.array([int(r["label"]) for r in rows])
    probability = np.array([float(r["probability"]) for r in rows])
    assert report["classification"]["auc"]["value"] == pytest.approx(
        roc_auc_score(labels, probability), abs=1e-6
    )
    threshold = report["operating_point"]["threshold"]
    predicted = np.array([int(r["predicted_class"]) for r in rows])
    np.testing.assert_array_equal(predicted, (probability >= threshold).astype(int))
    tp = int(((predicted == 1) & (labels == 1)).sum())
    assert report["classification"]["confusion_matrix"]["tp"] == tp
    # Per-image IoU against scikit-learn's Jaccard score on the same masks.
    from cervixnet.ensemble import apply_postprocessing, load_postprocessing
    from cervixnet.evaluation import predict_records, source_size_pairs

    config = load_config(tiny_run / "config.yaml")
    import keras

    model = keras.models.load_model(tiny_run / "model.keras")
    manifest = read_manifest(report["data"])
    test = Splits.load(tiny_run / "splits.json").indices(manifest)["test"]
    predictions = predict_records(
        model, manifest, test, image_size=config.data.image_size, channels=1, tta=True
    )
    # Scored at each scan's own size, with the run's post-processing.
    pairs = source_size_pairs(manifest, test, predictions["mask_prob"], config.data.resize)
    choice = load_postprocessing(tiny_run)
    for (truth, prob), row in zip(pairs, rows, strict=True):
        guess = apply_postprocessing(prob > 0.5, choice)
        assert truth.shape == guess.shape != tuple(config.data.image_size)
        score = jaccard_score(truth.ravel(), guess.ravel())
        assert float(row["iou"]) == pytest.approx(score, abs=1e-5)
    ious = np.array([float(r["iou"]) for r in rows])
    assert report["segmentation"]["iou"]["value"] == pytest.approx(ious.mean(), abs=1e-5)


def test_threshold_comes_from_validation_and_test_data_cannot_move_it(
    tiny_run: Path, tmp_path: Path
):
    config = load_config(tiny_run / "config.yaml")
    source = Path(config.data.path)
    altered = tmp_path / "altered"
    shutil.copytree(source, altered)
    splits = Splits.load(tiny_run / "splits.json")
    manifest = read_manifest(altered)
    rng = np.random.default_rng(0)
    for i in splits.indices(manifest)["test"]:  # every test image replaced by noise
        path = manifest.records[i].image
        shape = cv2.imread(str(path)).shape
        cv2.imwrite(str(path), (rng.random(shape) * 255).astype(np.uint8))
    quiet = {"n_bootstrap": 100, "gradcam_images": 0, "echo": lambda _: None}
    original = evaluate_run(tiny_run, out_dir=tmp_path / "a", **quiet)
    changed = evaluate_run(tiny_run, data=altered, out_dir=tmp_path / "b", **quiet)
    assert original.report["operating_point"] == changed.report["operating_point"]
    assert original.report["segmentation"]["iou"] != changed.report["segmentation"]["iou"]
    assert original.report["operating_point"]["rule"] == "youden"


def test_threshold_rules_and_bad_options(tiny_run: Path, tmp_path: Path):
    quiet = {"n_bootstrap": 100, "gradcam_images": 0, "echo": lambda _: None}
    fixed = evaluate_run(
        tiny_run, out_dir=tmp_path / "f", threshold_rule="fixed", target=0.3, **quiet
    )
    assert fixed.report["operating_point"]["threshold"] == 0.3
    result = CliRunner().invoke(
        main, ["evaluate", str(tiny_run), "--threshold-rule", "sensitivity"]
    )
    assert result.exit_code == 1 and "target" in result.output
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1 and "not a cervixnet run folder" in result.output


def test_an_evaluation_that_fails_midway_leaves_no_half_report(
    tiny_run: Path, tmp_path: Path, monkeypatch
):
    from cervixnet import figures

    def broken(*args, **kwargs):
        raise OSError("killed while drawing")

    monkeypatch.setattr(figures, "overlay_figure", broken)  # drawn after the first files
    with pytest.raises(OSError, match="killed while drawing"):
        evaluate_run(
            tiny_run, out_dir=tmp_path / "report", n_bootstrap=50, gradcam_images=0,
            echo=lambda _: None,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # neither the report nor its hidden staging folder


def test_a_folds_folder_is_evaluated_averaged_on_other_patients(tiny_run: Path, tmp_path: Path):
    """Identical folds average to the single model: the same report as the one run's; the
    folds' own data, or none, is refused."""
    folds = tmp_path / "cv"
    folds.mkdir()
    for k in (1, 2):
        shutil.copytree(tiny_run, folds / f"fold-{k}")
    (folds / "folds.json").write_text("[]", encoding="utf-8")
    other = tmp_path / "other"
    write_tiny_dataset(other, n_patients=6)

    def rename(fields, rows):
        return fields, [{**row, "patient_id": "new-" + row["patient_id"]} for row in rows]

    rewrite_manifest(other / "manifest.csv", rename)
    quiet = {"n_bootstrap": 100, "gradcam_images": 0, "echo": lambda _: None}
    single = evaluate_run(tiny_run, data=other, out_dir=tmp_path / "one", **quiet)
    averaged = evaluate_run(folds, data=other, out_dir=tmp_path / "two", **quiet)
    assert averaged.report["split"] == single.report["split"] == "external"
    assert (averaged.report["models"], single.report["models"]) == (2, 1)
    for section in ("segmentation", "classification", "operating_point"):
        assert averaged.report[section] == single.report[section], section
    config = load_config(tiny_run / "config.yaml")
    with pytest.raises(ConfigError, match="on which the fold models were trained"):
        evaluate_run(folds, data=config.data.path, out_dir=tmp_path / "three", **quiet)
    with pytest.raises(ConfigError, match="cross-validation folder"):
        evaluate_run(folds, out_dir=tmp_path / "four", **quiet)


def test_measurements_agree_with_a_reference_column_and_meet_the_image_model(
    tiny_run: Path, tmp_path: Path
):
    """With the pixel spacing and an ``area_mm2`` reference column, evaluate measures every
    predicted mask in mm, reports its agreement (Bland-Altman) and compares the label from the
    area alone, the image model and both (the run's markers.json), with a decision curve."""
    from cervixnet import clinical

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    area = rng.normal(3.5, 0.5, 40) - 0.4 * labels
    clinical.fit_markers(labels, area, rng.random(40), "area_mm2").save(run / "markers.json")
    spacing = 0.1
    data = tmp_path / "data"
    shutil.copytree(Path(load_config(tiny_run / "config.yaml").data.path), data)

    def add_columns(fields, rows):
        for row in rows:
            mask = cv2.imread(str(data / row["mask"]), cv2.IMREAD_GRAYSCALE)
            row["pixel_spacing_mm"] = str(spacing)
            row["area_mm2"] = f"{np.count_nonzero(mask) * spacing**2:.4f}"
        rows[0]["area_mm2"] = ""  # a reference may be missing
        return [*fields, "pixel_spacing_mm", "area_mm2"], rows

    rewrite_manifest(data / "manifest.csv", add_columns)
    quiet = {"n_bootstrap": 100, "gradcam_images": 0, "echo": lambda _: None}
    result = evaluate_run(run, data=data, out_dir=tmp_path / "report", **quiet)
    report = result.report
    assert report["segmentation"]["distance_unit"] == "mm"
    assert set(report["measurements"]) == {
        "cervical_length_mm",
        "head_circumference_mm",
        "area_mm2",
    }
    rows = list(csv.DictReader((result.out_dir / "predictions.csv").open()))
    assert {"hd95_mm", "assd_mm", "area_mm2"} <= set(rows[0])
    manifest = read_manifest(data)
    by_name = {str(r.image.relative_to(manifest.root)): r for r in manifest.records}
    measured = np.array([float(r["area_mm2"] or "nan") for r in rows])
    reference = np.array(
        [float(by_name[r["source_image"]].extra["area_mm2"] or "nan") for r in rows]
    )
    expected = clinical.agreement(measured, reference)
    agreement = report["measurements"]["area_mm2"]["agreement"]
    assert agreement["mae"]["value"] == pytest.approx(expected["mae"], abs=1e-3)
    assert agreement["bias"]["value"] == pytest.approx(expected["bias"], abs=1e-3)
    assert "agreement" not in report["measurements"]["cervical_length_mm"]  # no reference
    assert (result.out_dir / "bland_altman_area_mm2.pdf").is_file()
    markers = report["markers"]
    assert markers["measurement"] == "area_mm2" and list(markers["predictors"]) == [
        "measurement", "image", "combined"
    ]  # fmt: skip
    known = np.array([r["label"] != "" for r in rows]) & np.isfinite(measured)
    y = np.array([float(r["label"]) for r in rows])[known]
    probability = np.array([float(r["probability"]) for r in rows])[known]
    models = clinical.load_markers(run / "markers.json")
    scores = models.predict(measured[known], probability)
    assert markers["predictors"]["image"]["auc"] == pytest.approx(roc_auc_score(y, probability))
    assert markers["predictors"]["combined"]["auc"] == pytest.approx(
        roc_auc_score(y, scores["combined"])
    )
    assert (result.out_dir / "decision_curve.png").is_file()
    markdown = (result.out_dir / "report.md").read_text()
    assert "## Measurements" in markdown and "## The measurement and the image model" in markdown
