"""Serving: `cervixnet export`, the REST client, and one prediction from every saved form."""

import base64
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.serving import (
    IMAGE_BYTES_INPUT,
    float_request,
    image_bytes_request,
    parse_response,
    prepare_for_serving,
)


@pytest.fixture(scope="module")
def exports(tiny_run: Path, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("exports")
    runner = CliRunner()
    saved = runner.invoke(main, ["export", str(tiny_run), "--out", str(base / "cervix")])
    assert saved.exit_code == 0, saved.output
    assert "predict_image_bytes: inputs image_bytes" in saved.output
    onnx = runner.invoke(
        main, ["export", str(tiny_run), "--out", str(base / "cervix.onnx"), "--format", "onnx"]
    )
    assert onnx.exit_code == 0, onnx.output
    return {"keras": tiny_run, "savedmodel": base / "cervix", "onnx": base / "cervix.onnx"}


def _scans(folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for k, (height, width) in enumerate([(40, 60), (64, 48)]):
        image = (rng.random((height, width)) * 50).astype(np.uint8)
        cv2.ellipse(
            image, (width // 2, height // 2), (width // 4, height // 5), 10, 0, 360, 210, -1
        )
        path = folder / f"scan{k}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        paths.append(path)
    return paths


def test_keras_savedmodel_and_onnx_predict_the_same(exports, tmp_path: Path):
    scans = _scans(tmp_path / "scans")
    results = {}
    for kind, model in exports.items():
        out = tmp_path / kind
        result = CliRunner().invoke(
            main, ["predict", str(model), *map(str, scans), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        masks = [cv2.imread(str(out / r["mask"]), cv2.IMREAD_UNCHANGED) for r in rows]
        results[kind] = (rows, masks)
    keras_rows, keras_masks = results["keras"]
    saved = json.loads((exports["keras"] / "operating_point.json").read_text())
    for kind in ("savedmodel", "onnx"):
        rows, masks = results[kind]
        for a, b in zip(keras_rows, rows, strict=True):
            assert abs(float(a["probability"]) - float(b["probability"])) < 1e-5
            assert float(b["threshold"]) == pytest.approx(saved["threshold"], abs=1e-6)
            assert a["predicted_class"] == b["predicted_class"]
        for a, b in zip(keras_masks, masks, strict=True):
            assert a.shape == b.shape and (a != b).mean() < 0.001


def _serve(signature, body: dict) -> dict:
    """What TF Serving's REST API does with a request body: decode, call, answer in rows."""
    inputs = {}
    for instance in body["instances"]:
        for name, value in instance.items():
            if isinstance(value, dict) and "b64" in value:
                value = base64.b64decode(value["b64"])
            inputs.setdefault(name, []).append(value)
    tensors = {
        name: tf.constant(values)
        if isinstance(values[0], bytes)
        else tf.constant(values, tf.float32)
        for name, values in inputs.items()
    }
    outputs = {k: v.numpy().tolist() for k, v in signature(**tensors).items()}
    count = len(next(iter(outputs.values())))
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(count)]}


def test_rest_client_round_trip_through_both_signatures(exports, tmp_path: Path):
    loaded = tf.saved_model.load(str(exports["savedmodel"] / "1"))
    scans = _scans(tmp_path / "scans")
    body = image_bytes_request(scans)
    assert body["signature_name"] == "predict_image_bytes"
    assert set(body["instances"][0]) == {IMAGE_BYTES_INPUT}
    json.dumps(body)  # a valid JSON body
    served = parse_response(_serve(loaded.signatures["predict_image_bytes"], body))
    for path, prediction in zip(scans, served, strict=True):
        assert prediction.original_size == cv2.imread(str(path)).shape[:2]
        assert prediction.mask.shape == prediction.uncertainty.shape == (32, 32)
        assert 0.0 <= prediction.probability <= 1.0 and prediction.label in (0, 1)
    images = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    served = parse_response(_serve(loaded.signatures["serving_default"], float_request(images)))
    assert len(served) == 2 and served[0].original_size is None
    # Cleaned client-side (calipers filled), the bytes still decode in the graph.
    cleaned = prepare_for_serving(scans[0], exports["keras"])
    assert parse_response(
        _serve(loaded.signatures["predict_image_bytes"], image_bytes_request([cleaned]))
    )


def test_parse_response_formats_and_errors():
    columns = {"outputs": {"mask": [[[0.1, 0.9]]], "probability": [0.7], "label": [1]}}
    (prediction,) = parse_response(columns)
    assert prediction.probability == pytest.approx(0.7) and prediction.label == 1
    assert prediction.mask.shape == (1, 2) and prediction.uncertainty is None  # older export
    with pytest.raises(ValueError, match="error"):
        parse_response({"error": "Expected image (JPEG, PNG, or GIF), got unknown format"})
    with pytest.raises(ValueError, match="Received keys"):
        parse_response({"result": []})


def test_segmentation_only_export_says_so(tmp_path: Path):
    from cervixnet import models

    model = models.get("unet", input_shape=(32, 32, 1), base_filters=4, depth=2)
    model.save(tmp_path / "unet.keras")
    result = CliRunner().invoke(
        main, ["export", str(tmp_path / "unet.keras"), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert "no probability or label output" in result.output
    assert "probability" not in result.output.split("Segmentation-only")[0]
