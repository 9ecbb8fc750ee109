"""SavedModel export for TF Serving: signatures, versions, metadata, a load without cervixnet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import cervixnet
import cervixnet.export as export
from cervixnet import models
from cervixnet.config import load_config, save_config
from cervixnet.data.letterbox import letterbox_geometry
from cervixnet.data.pipeline import preprocess_image
from cervixnet.errors import ConfigError
from cervixnet.export import (
    VERIFY_TOLERANCE,
    ExportVerificationError,
    export_savedmodel,
    read_export_metadata,
)
from tests.conftest import set_trained_statistics

THRESHOLD = 0.37
SIZE = (32, 32)
MASK_SIZE = (40, 24)
TINY = {"input_shape": (*SIZE, 1), "base_filters": 4, "depth": 2}

# Runs where cervixnet is never imported: only TensorFlow and the exported folders.
LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    job = json.loads(open(sys.argv[1]).read())
    images = tf.constant(np.load(job["images"]))
    pngs = tf.constant([open(p, "rb").read() for p in job["pngs"]])
    plain = lambda outputs: {k: v.numpy().tolist() for k, v in outputs.items()}
    result = {}
    for name, path in job["exports"].items():
        loaded = tf.saved_model.load(path)
        by_bytes = loaded.signatures["predict_image_bytes"]
        out = {"signatures": sorted(loaded.signatures)}
        out["members"] = plain(loaded.signatures["members"](images=images))
        out["serving_default"] = plain(loaded.signatures["serving_default"](images=images))
        try:
            by_bytes(image_bytes=tf.constant([b"not an image"]))
            out["corrupt"] = "no error"
        except tf.errors.InvalidArgumentError as error:
            out["corrupt"] = type(error).__name__
        out["predict_image_bytes"] = plain(by_bytes(image_bytes=pngs))
        result[name] = out
    result["cervixnet_imported"] = any(m.split(".")[0] == "cervixnet" for m in sys.modules)
    open(job["out"], "w").write(json.dumps(result))
    """
)


def _images() -> np.ndarray:
    """float32 (4, 32, 32, 1) in [0, 1], exactly representable as 8-bit PNG pixels."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, *SIZE, 1))
    images[2:, 8:24, 10:22] = 230  # a bright block on noise
    images[3] //= 2
    return images.astype(np.float32) / 255


def _spread_label(model: keras.Model, images: np.ndarray) -> None:
    """Rescales the ``label`` layer so that the images' probabilities straddle THRESHOLD."""
    layer = model.get_layer("label")
    features = keras.Model(model.inputs[0], layer.input)(images, training=False)
    kernel, bias = layer.get_weights()
    logits = np.asarray(features) @ kernel
    scale = 1.5 / max(float(logits.std()), 1e-6)
    centre = np.log(THRESHOLD / (1 - THRESHOLD)) - scale * float(np.median(logits))
    layer.set_weights([kernel * scale, np.full_like(bias, centre)])


def _keras_outputs(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    outputs = models.named_outputs(model, model(images, training=False))
    if "label" in outputs:
        return {
            "mask": np.asarray(outputs["mask"]),
            "probability": np.asarray(outputs["label"])[:, 0],
        }
    return {"mask": np.asarray(outputs["mask"])}


def _with_flip(models_: list[keras.Model], images: np.ndarray) -> dict[str, np.ndarray]:
    """Each model on the images and on their mirror (flipped back), in NumPy: the members a
    test-time-augmented ensemble averages, ``masks`` (M, N, H, W, 1)."""
    masks, probabilities = [], []
    for model in models_:
        for flip in (False, True):
            out = _keras_outputs(model, images[:, :, ::-1] if flip else images)
            masks.append(out["mask"][:, :, ::-1] if flip else out["mask"])
            probabilities.append(out.get("probability"))
    result = {"masks": np.stack(masks)}
    result["mask"] = result["masks"].mean(axis=0)
    result["uncertainty"] = result["masks"].std(axis=0)
    if probabilities[0] is not None:
        result["probability"] = np.mean(probabilities, axis=0)
    return result


def _png(array: np.ndarray) -> bytes:
    return tf.io.encode_png(array).numpy()


@pytest.fixture(scope="module")
def joint(tmp_path_factory) -> dict:
    """A tiny joint model's run folder exported as versions 1 and 2 (mask size 40x24)."""
    root = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    model = models.get("unet-joint", **TINY)
    images = _images()
    _spread_label(model, images)
    run = root / "run"
    run.mkdir()
    model.save(run / "model.keras")
    save_config(load_config(overrides={"data.image_size": list(SIZE)}), run / "config.yaml")
    choice = {"threshold": THRESHOLD, "rule": "youden", "target": None, "sensitivity": 1.0}
    choice.update({"specificity": 0.5, "chosen_on": "val"})
    (run / "operating_point.json").write_text(json.dumps(choice))
    splits = {"train": {"n_images": 12}, "val": {"n_images": 4}, "test": {"n_images": 4}}
    metrics = {"prepared_data": "/data/prepared", "epochs": 2, "best_epoch": 2, "splits": splits}
    (run / "metrics.json").write_text(json.dumps(metrics))
    base = root / "serving" / "cervixnet"
    first = export_savedmodel(run, base)
    second = export_savedmodel(run / "model.keras", base, mask_size=MASK_SIZE)
    return {"model": model, "images": images, "run": run, "base": base, "v1": first, "v2": second}


def test_versions_are_numbered_and_never_overwritten(joint):
    base = joint["base"]
    assert (joint["v1"].version, joint["v2"].version) == (1, 2)
    assert joint["v1"].path == base / "1" and (base / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # no staging folder left
    with pytest.raises(ConfigError, match="already exists"):
        export_savedmodel(joint["run"], base, version=1)
    for bad in ({"version": 0}, {"version": "3"}, {"mask_size": (0, 5)}, {"mask_size": "big"}):
        with pytest.raises(ConfigError, match="Received"):
            export_savedmodel(joint["run"], base, **bad)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]


def test_signatures_as_served(joint):
    signatures = joint["v1"].signatures
    assert signatures["serving_default"] == {
        "inputs": {"images": {"dtype": "float32", "shape": [None, *SIZE, 1]}},
        "outputs": {
            "label": {"dtype": "int32", "shape": [None]},
            "mask": {"dtype": "float32", "shape": [None, *SIZE, 1]},
            "probability": {"dtype": "float32", "shape": [None]},
            "uncertainty": {"dtype": "float32", "shape": [None, *SIZE, 1]},
        },
    }
    assert signatures["members"]["outputs"] == {  # one model, plain and flipped
        "masks": {"dtype": "float32", "shape": [None, 2, *SIZE]},
        "probabilities": {"dtype": "float32", "shape": [None, 2]},
    }
    by_bytes = joint["v2"].signatures["predict_image_bytes"]
    assert by_bytes["inputs"] == {"image_bytes": {"dtype": "string", "shape": [None]}}
    assert by_bytes["outputs"]["mask"]["shape"] == [None, *MASK_SIZE, 1]
    assert sorted(by_bytes["outputs"]) == [
        "label", "mask", "original_height", "original_width", "probability", "uncertainty"
    ]  # fmt: skip
    assert 0 <= joint["v1"].max_abs_diff <= VERIFY_TOLERANCE


def test_loads_and_predicts_without_cervixnet(joint, tmp_path):
    model, images = joint["model"], joint["images"]
    rng = np.random.default_rng(5)
    at_size = [_png(np.round(image * 255).astype(np.uint8)) for image in images]
    rgb = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb[::-1], np.full((50, 70, 1), 128, np.uint8)], axis=-1)
    gray16 = rng.integers(0, 65536, (45, 60, 1), dtype=np.uint16)
    encoded = [*at_size, _png(rgb), _png(rgba), _png(gray16)]
    sizes = [list(SIZE)] * len(at_size) + [[50, 70], [50, 70], [45, 60]]
    pngs = []
    for k, data in enumerate(encoded):
        pngs.append(tmp_path / f"{k}.png")
        pngs[-1].write_bytes(data)
    np.save(tmp_path / "images.npy", images)
    job = {
        "exports": {"v1": str(joint["v1"].path), "v2": str(joint["v2"].path)},
        "images": str(tmp_path / "images.npy"),
        "pngs": [str(p) for p in pngs],
        "out": str(tmp_path / "out.json"),
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "loader.py").write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, "loader.py", "job.json"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["cervixnet_imported"] is False

    # The run letterboxes and mirrors at test time (the default): so does the export.
    want = _with_flip([model], images)
    prepared = np.stack(
        [preprocess_image(tf.constant(d), SIZE, 1, "letterbox").numpy() for d in encoded]
    )
    want_bytes = _with_flip([model], prepared)
    assert np.abs(prepared[:4] - images).max() < 1e-6  # at the model size: the identity
    assert prepared[4:, :2].max() == 0 < prepared[4:, 10].min()  # 50 x 70 -> 23 x 32, padded
    assert want["probability"].min() < THRESHOLD < want["probability"].max()
    assert want["uncertainty"].max() > 1e-3  # the mirrored pass differs
    for name, mask_size in (("v1", SIZE), ("v2", MASK_SIZE)):
        out = result[name]
        assert out["signatures"] == ["members", "predict_image_bytes", "serving_default"]
        assert out["corrupt"] == "InvalidArgumentError"  # and the next call still worked
        served = {k: np.asarray(v) for k, v in out["serving_default"].items()}
        by_bytes = {k: np.asarray(v) for k, v in out["predict_image_bytes"].items()}
        for key in ("mask", "probability", "uncertainty"):
            np.testing.assert_allclose(served[key], want[key], rtol=0, atol=VERIFY_TOLERANCE)
        np.testing.assert_allclose(
            np.moveaxis(out["members"]["masks"], 1, 0), want["masks"][..., 0], atol=1e-5
        )
        for outputs in (served, by_bytes):
            probability = outputs["probability"].astype(np.float32)
            assert outputs["label"].tolist() == (probability >= np.float32(THRESHOLD)).tolist()
            assert ((probability >= 0) & (probability <= 1)).all()
        assert by_bytes["mask"].shape == (len(encoded), *mask_size, 1)
        assert np.stack([by_bytes["original_height"], by_bytes["original_width"]], 1).tolist() == (
            sizes
        )
        np.testing.assert_allclose(
            by_bytes["probability"], want_bytes["probability"], rtol=0, atol=VERIFY_TOLERANCE
        )
        # The mask covers the whole decoded image: the letterbox's content box, resized.
        for k, (height, width) in enumerate(sizes):
            box = letterbox_geometry((height, width), SIZE)
            (ch, cw), top, left = box.content_size, box.top, box.left
            content = want_bytes["mask"][k : k + 1, top : top + ch, left : left + cw]
            mask = tf.image.resize(content, mask_size, method="bilinear").numpy()
            np.testing.assert_allclose(by_bytes["mask"][k : k + 1], mask, atol=VERIFY_TOLERANCE)
        # A PNG at the model's size gives what serving_default gives on the same pixels.
        np.testing.assert_allclose(
            by_bytes["probability"][:4], served["probability"], rtol=0, atol=VERIFY_TOLERANCE
        )
    np.testing.assert_allclose(
        np.asarray(result["v1"]["predict_image_bytes"]["mask"])[:4],
        np.asarray(result["v1"]["serving_default"]["mask"]),
        rtol=0,
        atol=VERIFY_TOLERANCE,
    )


def test_corrupt_bytes_fail_the_call_not_the_model(joint):
    loaded = tf.saved_model.load(str(joint["v1"].path))
    signature = loaded.signatures["predict_image_bytes"]
    with pytest.raises(tf.errors.InvalidArgumentError):
        signature(image_bytes=tf.constant([b"not an image"]))
    png = _png(np.round(joint["images"][0] * 255).astype(np.uint8))
    out = signature(image_bytes=tf.constant([png, png]))
    assert out["mask"].shape == (2, *SIZE, 1)


def test_metadata_describes_the_export(joint):
    metadata = read_export_metadata(joint["v1"].path)
    assert metadata == joint["v1"].metadata
    assert read_export_metadata(joint["base"])["mask_size"] == list(MASK_SIZE)  # latest: v2
    assert (joint["v1"].path / "assets.extra" / "cervixnet.json").is_file()
    assert metadata["architecture"] == "unet-joint"
    assert metadata["input"] == {
        "height": 32, "width": 32, "channels": 1, "dtype": "float32", "range": [0.0, 1.0]
    }  # fmt: skip
    assert (metadata["threshold"], metadata["threshold_source"]) == (THRESHOLD, "youden on val")
    assert metadata["label_output"] is True
    assert set(metadata["outputs"]) >= {"mask", "probability", "label", "original_height"}
    assert set(metadata["signatures"]) == {"serving_default", "members", "predict_image_bytes"}
    assert metadata["ensemble"]["models"] == 1 and metadata["ensemble"]["members"] == 2
    assert (metadata["resize"], metadata["tta"]) == ("letterbox", True)
    steps = json.dumps(metadata["preprocessing"])
    assert "remove_calipers" in steps and "prepare_images" in steps and "NOT" in steps
    assert "area when shrinking" in steps and "letterbox" in steps
    assert metadata["versions"]["cervixnet"] == cervixnet.__version__
    assert metadata["versions"]["tensorflow"] == tf.__version__
    assert metadata["versions"]["keras"] == keras.__version__
    data = metadata["training_data"]
    assert data["prepared_data"] == "/data/prepared"
    assert data["n_images"] == {"train": 12, "val": 4, "test": 4}
    assert metadata["verification"]["tolerance"] == VERIFY_TOLERANCE
    assert metadata["batch_norms_folded"] == len(models.foldable_pairs(joint["model"])) > 0
    assert metadata["dtype_policy"] == {"trained": "float32", "served": "float32"}
    assert metadata["exported_at"].startswith("20")
    with pytest.raises(ConfigError, match="no readable"):
        read_export_metadata(joint["run"])


def test_segmentation_only_model(tmp_path):
    keras.utils.set_random_seed(1)
    model = models.get("unet", **TINY)
    model.save(tmp_path / "unet.keras")
    result = export_savedmodel(tmp_path / "unet.keras", tmp_path / "base", verify=True)
    assert result.version == 1 and result.max_abs_diff <= VERIFY_TOLERANCE
    assert sorted(result.signatures["serving_default"]["outputs"]) == ["mask", "uncertainty"]
    assert sorted(result.signatures["predict_image_bytes"]["outputs"]) == [
        "mask", "original_height", "original_width", "uncertainty"
    ]  # fmt: skip
    loaded = tf.saved_model.load(str(result.path))
    outputs = loaded.signatures["serving_default"](images=tf.constant(_images()))
    assert sorted(outputs) == ["mask", "uncertainty"]
    metadata = result.metadata
    assert metadata["architecture"] == "unet" and metadata["label_output"] is False
    assert metadata["threshold"] is None and "no probability or label" in metadata["classification"]
    assert metadata["training_data"]["run_record"] is False


def test_folded_and_unfolded_exports_serve_the_same_outputs(tmp_path):
    """With moving statistics far from 0 and 1, the folded graph still passes verification."""
    keras.utils.set_random_seed(2)
    model = models.get("unet", **TINY)
    set_trained_statistics(model)
    model.save(tmp_path / "unet.keras")
    folded = export_savedmodel(tmp_path / "unet.keras", tmp_path / "base")
    unfolded = export_savedmodel(tmp_path / "unet.keras", tmp_path / "base", fold_batch_norms=False)
    assert folded.metadata["batch_norms_folded"] > 0
    assert unfolded.metadata["batch_norms_folded"] == 0
    images = tf.constant(_images())
    masks = [
        tf.saved_model.load(str(result.path)).signatures["serving_default"](images=images)["mask"]
        for result in (folded, unfolded)
    ]
    np.testing.assert_allclose(masks[0], masks[1], atol=VERIFY_TOLERANCE)
    assert float(np.ptp(masks[1])) > 0.01  # the statistics reach the output


def test_verification_catches_preprocessing_that_differs_from_training(joint, monkeypatch):
    """An in-graph decode that is not the pipeline's fails verification and leaves nothing."""
    original = export.decode_image
    monkeypatch.setattr(export, "decode_image", lambda data, c: 1.0 - original(data, c))
    base = joint["base"].parent / "failing"
    with pytest.raises(ExportVerificationError, match=r"predict_image_bytes/\w+.*tolerance"):
        export_savedmodel(joint["run"], base)
    assert list(base.iterdir()) == []


def _mixed_precision_model(path) -> keras.Model:
    """A tiny joint model built in mixed_bfloat16, with trained statistics, saved to ``path``."""
    keras.utils.set_random_seed(4)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = models.get("unet-joint", **TINY)
    finally:
        keras.config.set_dtype_policy("float32")
    set_trained_statistics(model)
    model.save(path)
    return model


def test_a_mixed_precision_model_is_served_in_float32_and_folded(tmp_path):
    """A model trained in mixed_bfloat16 is exported as its float32 copy, verified to 1e-5."""
    model = _mixed_precision_model(tmp_path / "mixed.keras")
    result = export_savedmodel(tmp_path / "mixed.keras", tmp_path / "base")
    assert result.max_abs_diff <= VERIFY_TOLERANCE
    assert result.metadata["dtype_policy"] == {"trained": "mixed_bfloat16", "served": "float32"}
    assert result.metadata["batch_norms_folded"] > 0
    served = tf.saved_model.load(str(result.path)).signatures["serving_default"]
    probability = served(images=tf.constant(_images()))["probability"]
    expected = _with_flip([models.float32_copy(model)], _images())["probability"]
    np.testing.assert_allclose(probability, expected, atol=VERIFY_TOLERANCE)


def test_a_mixed_precision_model_exports_to_onnx_in_float32(tmp_path):
    _mixed_precision_model(tmp_path / "mixed.keras")
    result = export.export_onnx(tmp_path / "mixed.keras", tmp_path / "mixed.onnx")
    assert result.max_abs_diff <= VERIFY_TOLERANCE
    assert result.metadata["dtype_policy"] == {"trained": "mixed_bfloat16", "served": "float32"}


def _fold_run(folder, seed: int, threshold: float, tta: bool) -> keras.Model:
    """A tiny joint model's run folder with its operating threshold."""
    keras.utils.set_random_seed(seed)
    model = models.get("unet-joint", **TINY)
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    config = load_config(overrides={"data.image_size": list(SIZE), "evaluation.tta": tta})
    save_config(config, folder / "config.yaml")
    choice = {"threshold": threshold, "rule": "youden", "target": None, "sensitivity": 1.0}
    choice.update({"specificity": 0.5, "chosen_on": "val"})
    (folder / "operating_point.json").write_text(json.dumps(choice))
    return model


@pytest.mark.parametrize("tta", [True, False])
def test_a_folds_folder_exports_as_one_ensemble(tmp_path, tta):
    """Three fold models (and their mirrored passes) averaged in one graph, as predict does."""
    from cervixnet.inference import load_predictor

    folds = tmp_path / "folds"
    fold_models = [
        _fold_run(folds / f"fold-{k + 1}", seed=10 + k, threshold=0.3 + 0.1 * k, tta=tta)
        for k in range(3)
    ]
    (folds / "folds.json").write_text("[]")
    result = export_savedmodel(folds, tmp_path / "base")
    assert result.max_abs_diff <= VERIFY_TOLERANCE
    ensemble = result.metadata["ensemble"]
    assert ensemble["models"] == 3 and ensemble["folds"] == ["fold-1", "fold-2", "fold-3"]
    assert ensemble["members"] == (6 if tta else 3)
    assert result.metadata["threshold"] == pytest.approx(0.4)
    assert len(result.metadata["training_data"]) == 3

    images = _images()
    signatures = tf.saved_model.load(str(result.path)).signatures
    served = signatures["serving_default"](images=tf.constant(images))
    if tta:
        want = _with_flip(fold_models, images)
    else:
        plain = [_keras_outputs(m, images) for m in fold_models]
        want = {"mask": np.mean([o["mask"] for o in plain], axis=0)}
        want["uncertainty"] = np.std([o["mask"] for o in plain], axis=0)
        want["probability"] = np.mean([o["probability"] for o in plain], axis=0)
    for key in ("mask", "uncertainty", "probability"):
        np.testing.assert_allclose(served[key], want[key], atol=VERIFY_TOLERANCE)
    assert float(served["uncertainty"].numpy().max()) > 1e-3  # different models disagree
    labels = (served["probability"].numpy() >= np.float32(0.4)).astype(np.int32)
    assert served["label"].numpy().tolist() == labels.tolist()

    # cervixnet's own predictor reads the export's members: the same as the folds folder's.
    from_export, from_folds = load_predictor(result.path), load_predictor(folds)
    assert from_export.runs == () and from_export.predict_members is not None
    exported, direct = from_export.members(images, 3), from_folds.members(images)
    np.testing.assert_allclose(exported.masks, direct.masks, atol=VERIFY_TOLERANCE)
    np.testing.assert_allclose(exported.probabilities, direct.probabilities, atol=1e-5)
    assert from_export.threshold == pytest.approx(from_folds.threshold)

    with pytest.raises(ConfigError, match="ONNX export takes one model"):
        export.export_onnx(folds, tmp_path / "folds.onnx")
