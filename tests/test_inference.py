"""Trained models on new files: `cervixnet predict` and `cervixnet gradcam`."""

import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.ensemble import predict_members
from cervixnet.evaluation import model_run
from cervixnet.inference import load_model, load_predictor, prepare_images


def _images_of_several_sizes(folder: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    folder.mkdir()
    paths = []
    for k, (height, width) in enumerate([(48, 64), (120, 90), (33, 47)]):
        image = (rng.random((height, width)) * 60).astype(np.uint8)
        cv2.ellipse(image, (width // 2, height // 2), (width // 4, height // 6), 0, 0, 360, 200, -1)
        colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        cv2.line(colour, (2, 2), (width - 3, 2), (0, 255, 255), 1)  # a caliper line
        path = folder / f"scan {k}.png"
        cv2.imwrite(str(path), colour)
        paths.append(path)
    return paths


def test_predict_writes_masks_of_each_images_own_size(tiny_run: Path, tmp_path: Path):
    images = _images_of_several_sizes(tmp_path / "new")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", str(tiny_run), *map(str, images), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["image"]).name for r in rows] == [p.name for p in images]
    saved = json.loads((tiny_run / "operating_point.json").read_text())
    for path, row in zip(images, rows, strict=True):
        height, width = cv2.imread(str(path)).shape[:2]
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
        assert (out / "overlays" / Path(row["mask"]).name).is_file()
        probability = float(row["probability"])
        assert 0 <= probability <= 1
        assert float(row["threshold"]) == round(saved["threshold"], 6)
        assert int(row["predicted_class"]) == int(probability >= saved["threshold"])
        assert int(row["mask_pixels"]) == int((mask > 0).sum())
        spread = cv2.imread(str(out / row["uncertainty_map"]), cv2.IMREAD_UNCHANGED)
        assert spread.shape == (height, width) and spread.dtype == np.uint8
        assert 0 <= float(row["uncertainty"]) <= 0.5


def test_new_images_are_prepared_exactly_as_training_images(tiny_run: Path):
    """The probability of a training image from its raw file equals the one training saw."""
    loaded = load_model(tiny_run)
    trained = list(csv.DictReader((tiny_run / "predictions.csv").open()))
    data = Path(json.loads((tiny_run / "metrics.json").read_text())["prepared_data"])
    source = Path(loaded.config.data.path)
    first = trained[0]
    prepared = prepare_images([source / first["source_image"]], loaded.config)
    stored = cv2.imread(str(data / first["image"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(prepared.inputs[0, ..., 0], stored / 255.0, atol=1e-6)
    # Scored as the run predicts: the plain and the flipped prediction averaged.
    members = predict_members(
        [model_run(loaded.model)], prepared.inputs, horizontal_flip=loaded.config.evaluation.tta
    )
    assert len(members.masks) == 2
    assert abs(members.mean_probability()[0] - float(first["probability"])) < 1e-4


def test_gradcam_writes_one_overlay_per_input(tiny_run: Path, tmp_path: Path):
    images = _images_of_several_sizes(tmp_path / "new")
    out = tmp_path / "cams"
    result = CliRunner().invoke(
        main, ["gradcam", str(tiny_run), *map(str, images), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == sorted(f"{p.stem}.png" for p in images)
    # 32 x 32 network inputs are drawn 8 times larger, so that the text stays readable.
    assert cv2.imread(str(written[0])).shape[:2] == (256, 256)


def test_gradcam_refuses_a_segmentation_only_model(tmp_path: Path):
    from cervixnet import models

    model = models.get("unet", input_shape=(32, 32, 1), base_filters=4, depth=2)
    model.save(tmp_path / "unet.keras")
    images = _images_of_several_sizes(tmp_path / "new")
    result = CliRunner().invoke(
        main,
        ["gradcam", str(tmp_path / "unet.keras"), str(images[0]), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 1 and "joint model" in result.output
    assert "Traceback" not in result.output


def _folds_folder(tiny_run: Path, folder: Path, folds: int) -> Path:
    """A ``--folds`` folder whose every fold is a copy of the tiny run."""
    import shutil

    folder.mkdir()
    for k in range(1, folds + 1):
        shutil.copytree(tiny_run, folder / f"fold-{k}")
    (folder / "folds.json").write_text("[]", encoding="utf-8")
    return folder


def test_an_ensemble_of_identical_folds_predicts_as_one_model(tiny_run: Path, tmp_path: Path):
    folds = _folds_folder(tiny_run, tmp_path / "cv", folds=3)
    ensemble, single = load_predictor(folds), load_predictor(tiny_run)
    assert ensemble.kind == "folds" and len(ensemble.runs) == 3
    images = prepare_images(_images_of_several_sizes(tmp_path / "new"), single.config).inputs
    members = ensemble.members(images)
    assert len(members.masks) == 6  # 3 folds x (plain, flipped)
    np.testing.assert_allclose(members.mean_mask(), single.members(images).mean_mask(), atol=1e-6)
    np.testing.assert_allclose(ensemble.predict(images)[1], single.predict(images)[1], atol=1e-6)
    # Identical folds: each fold's member equals the first fold's (no spread between folds).
    for fold in range(1, 3):
        np.testing.assert_array_equal(members.masks[2 * fold], members.masks[0])
    assert ensemble.threshold == single.threshold
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", str(folds), *map(str, _images_of_several_sizes(tmp_path / "more")),
               "--out", str(out)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean of 3 folds' thresholds" in (out / "predictions.csv").read_text()


def test_an_ensemble_averages_its_members(tiny_run: Path, tmp_path: Path):
    folds = _folds_folder(tiny_run, tmp_path / "cv", folds=2)
    ensemble = load_predictor(folds)
    # A second member that predicts the mask's complement: the average is 0.5 everywhere.
    first = ensemble.runs[0]

    def complement(images):
        mask, probability = first(images)
        return 1.0 - mask, 1.0 - probability

    images = prepare_images(_images_of_several_sizes(tmp_path / "new"), ensemble.config).inputs
    mixed = dataclasses.replace(ensemble, runs=(first, complement))
    masks, probability = mixed.predict(images)
    np.testing.assert_allclose(masks, 0.5, atol=1e-6)
    np.testing.assert_allclose(probability, 0.5, atol=1e-6)


def test_a_model_saved_with_list_outputs_still_predicts_explains_and_exports(
    tiny_run: Path, tmp_path: Path
):
    """A joint model saved with outputs ``[mask, label]`` (before they were named) still works."""
    import shutil

    import keras

    from cervixnet import explain
    from cervixnet.export import export_savedmodel

    old_run = tmp_path / "old-run"
    shutil.copytree(tiny_run, old_run)
    named = load_model(tiny_run).model
    assert isinstance(named.output, dict)
    listed = keras.Model(
        named.input, [named.get_layer("mask").output, named.get_layer("label").output]
    )
    listed.save(old_run / "model.keras")
    assert load_model(old_run).model.output_names == ["mask", "label"]
    old, new = load_predictor(old_run), load_predictor(tiny_run)
    assert old.joint
    images = prepare_images(_images_of_several_sizes(tmp_path / "new"), new.config).inputs
    for got, want in zip(old.predict(images), new.predict(images), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    (explained,) = explain.explain_images(load_model(old_run).model, images[:1], "gradcam")
    (expected,) = explain.explain_images(named, images[:1], "gradcam")
    assert explained.probability == pytest.approx(expected.probability, abs=1e-6)
    np.testing.assert_allclose(explained.cam, expected.cam, atol=1e-5)
    assert export_savedmodel(old_run, tmp_path / "served").max_abs_diff is not None


def _measured(out: Path, row: dict, spacing) -> dict[str, str]:
    from cervixnet.measure import measure

    mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
    return {k: "" if not np.isfinite(v) else f"{v:.3f}" for k, v in measure(mask, spacing).items()}


def test_predict_measures_each_mask_in_mm_or_in_pixels(tiny_run: Path, tmp_path: Path):
    images = _images_of_several_sizes(tmp_path / "new")
    for spacing, unit in (("0.25", "mm"), ("0.2,0.3", "mm"), (None, "px")):
        out = tmp_path / f"out-{unit}-{spacing}"
        option = [] if spacing is None else ["--spacing", spacing]
        result = CliRunner().invoke(
            main, ["predict", str(tiny_run), *map(str, images), "--out", str(out), *option]
        )
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        names = [f"cervical_length_{unit}", f"head_circumference_{unit}", f"area_{unit}2"]
        assert set(names) <= set(rows[0])
        scale = None if spacing is None else tuple(float(v) for v in spacing.split(","))
        scale = scale if scale is None or len(scale) == 2 else (scale[0], scale[0])
        for row in rows:
            assert {k: row[k] for k in names} == _measured(out, row, scale)


def test_predict_takes_a_data_set_and_each_rows_spacing(tiny_run: Path, tmp_path: Path):
    from tests.conftest import rewrite_manifest, write_tiny_dataset

    data = tmp_path / "data"
    write_tiny_dataset(data, n_patients=2)

    def add_spacing(fields, rows):
        for k, row in enumerate(rows):
            row["pixel_spacing_mm"] = f"{0.1 + 0.05 * k:.2f}"
        return [*fields, "pixel_spacing_mm"], rows

    rewrite_manifest(data / "manifest.csv", add_spacing)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(tiny_run), str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    sources = list(csv.DictReader((data / "manifest.csv").open()))
    assert len(rows) == len(sources)
    for row, source in zip(rows, sources, strict=True):
        assert Path(row["image"]).name == Path(source["image"]).name
        spacing = float(source["pixel_spacing_mm"])
        measured = _measured(out, row, (spacing, spacing))
        assert {k: row[k] for k in measured} == measured
    again = CliRunner().invoke(
        main,
        ["predict", str(tiny_run), str(data / "manifest.csv"), "--out", str(tmp_path / "o2"),
         "--spacing", "0.3"],
    )  # fmt: skip
    assert again.exit_code == 2 and "leave --spacing out" in again.output


@pytest.mark.parametrize("spacing", ["0", "-0.2", "a", "0.1,0.2,0.3", "nan", "0.2,"])
def test_a_bad_spacing_is_refused_with_what_was_received(tiny_run, tmp_path, spacing):
    images = _images_of_several_sizes(tmp_path / "new")
    result = CliRunner().invoke(
        main,
        ["predict", str(tiny_run), str(images[0]), "--out", str(tmp_path / "o"),
         "--spacing", spacing],
    )  # fmt: skip
    assert result.exit_code == 2 and repr(spacing) in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_predict_adds_the_combined_probability_of_the_runs_marker_models(
    tiny_run: Path, tmp_path: Path
):
    import shutil

    from cervixnet import clinical

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rng = np.random.default_rng(0)
    labels = np.arange(30) % 2
    length = rng.normal(30, 5, 30) - 4 * labels
    markers = clinical.fit_markers(labels, length, rng.random(30), "cervical_length_px")
    markers.save(run / "markers.json")
    images = _images_of_several_sizes(tmp_path / "new")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(run), *map(str, images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for row in csv.DictReader((out / "predictions.csv").open()):
        if row["cervical_length_px"]:
            expected = markers.predict(
                [float(row["cervical_length_px"])], [float(row["probability"])]
            )["combined"][0]
            assert float(row["combined_probability"]) == pytest.approx(expected, abs=1e-4)
    # In mm, the run's models (fitted on pixels) do not apply: no combined column.
    again = tmp_path / "mm"
    result = CliRunner().invoke(
        main,
        ["predict", str(run), *map(str, images), "--out", str(again), "--spacing", "0.2"],
    )
    assert result.exit_code == 0, result.output
    assert "combined_probability" not in next(csv.DictReader((again / "predictions.csv").open()))
