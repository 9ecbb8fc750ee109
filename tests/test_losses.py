"""Tests of cervixnet.losses against values computed independently (NumPy by hand, Keras)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import cervixnet.losses
from cervixnet.losses import (
    BCEDiceLoss,
    DiceLoss,
    WeightedBinaryCrossentropy,
    bce_dice_loss,
    dice_loss,
    positive_weight_from_labels,
    weighted_binary_crossentropy,
)
from cervixnet.metrics import PerImageIoU, iou_per_image

EPS = keras.config.epsilon()

# Fixtures and references


def _masks(shape: tuple[int, ...] = (3, 8, 8, 1), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic binary truths and probability predictions."""
    rng = np.random.default_rng(seed)
    y_true = (rng.random(shape) > 0.6).astype("float32")
    y_pred = rng.random(shape).astype("float32")
    return y_true, y_pred


def _np_dice(y_true: np.ndarray, y_pred: np.ndarray, epsilon: float = 1e-6) -> np.ndarray:
    y = y_true.reshape(len(y_true), -1).astype(np.float64)
    p = y_pred.reshape(len(y_pred), -1).astype(np.float64)
    numerator = 2.0 * (y * p).sum(axis=1) + epsilon
    return 1.0 - numerator / ((y**2).sum(axis=1) + (p**2).sum(axis=1) + epsilon)


def _np_bce(y_true: np.ndarray, y_pred: np.ndarray, positive_weight: float = 1.0) -> np.ndarray:
    y = y_true.reshape(len(y_true), -1).astype(np.float64)
    # Clipped in float32, where the loss computes (1 - 1e-7 rounds to 1 - 2**-23 there).
    p = np.clip(y_pred.reshape(len(y_pred), -1).astype(np.float32), EPS, np.float32(1.0 - EPS))
    p = p.astype(np.float64)
    return -(positive_weight * y * np.log(p) + (1.0 - y) * np.log(1.0 - p)).mean(axis=1)


def _tiny_segmenter() -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="image")
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(inputs)
    return keras.Model(inputs, mask, name="tiny_segmenter")


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


# Values


@pytest.mark.parametrize("epsilon", [1e-6, 1.0])
@pytest.mark.parametrize("shape", [(3, 8, 8, 1), (2, 5, 7)])
def test_dice_loss_matches_numpy(shape, epsilon):
    y_true, y_pred = _masks(shape)
    loss = _np(dice_loss(y_true, y_pred, epsilon=epsilon))
    assert loss.shape == (shape[0],)
    np.testing.assert_allclose(loss, _np_dice(y_true, y_pred, epsilon), rtol=1e-5, atol=1e-6)


def test_dice_loss_accepts_truth_without_channel_axis():
    y_true, y_pred = _masks((2, 6, 6, 1))
    np.testing.assert_allclose(
        _np(dice_loss(y_true[..., 0], y_pred)), _np(dice_loss(y_true, y_pred)), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("truth", "prediction", "expected"),
    [
        (0.0, 0.0, 0.0),  # empty truth, empty prediction: a perfect match
        (1.0, 1.0, 0.0),  # all-one truth, all-one prediction
        (0.0, 1.0, 1.0),  # empty truth, full prediction
        (1.0, 0.0, 1.0),  # full truth, empty prediction
    ],
)
def test_dice_loss_edge_cases(truth, prediction, expected):
    y_true = np.full((2, 8, 8, 1), truth, "float32")
    y_pred = np.full((2, 8, 8, 1), prediction, "float32")
    loss = _np(dice_loss(y_true, y_pred))
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, expected, atol=1e-6)


def test_bce_dice_alpha_one_is_keras_binary_crossentropy():
    y_true, y_pred = _masks()
    ours = _np(bce_dice_loss(y_true, y_pred, alpha=1.0))
    keras_per_pixel = _np(keras.losses.BinaryCrossentropy(reduction=None)(y_true, y_pred))
    np.testing.assert_allclose(ours, keras_per_pixel.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(
        _np(BCEDiceLoss(alpha=1.0)(y_true, y_pred)),
        _np(keras.losses.BinaryCrossentropy()(y_true, y_pred)),
        rtol=1e-5,
    )


def test_bce_dice_alpha_zero_is_dice():
    y_true, y_pred = _masks()
    np.testing.assert_allclose(
        _np(bce_dice_loss(y_true, y_pred, alpha=0.0)), _np_dice(y_true, y_pred), rtol=1e-5
    )


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_bce_dice_is_weighted_sum(alpha):
    y_true, y_pred = _masks()
    expected = alpha * _np_bce(y_true, y_pred) + (1 - alpha) * _np_dice(y_true, y_pred)
    np.testing.assert_allclose(_np(bce_dice_loss(y_true, y_pred, alpha=alpha)), expected, rtol=1e-5)
    np.testing.assert_allclose(
        _np(BCEDiceLoss(alpha=alpha)(y_true, y_pred)), expected.mean(), rtol=1e-5
    )


def test_weighted_bce_with_weight_one_is_keras_binary_crossentropy():
    y_true = np.array([[1.0], [0.0], [1.0], [0.0]], "float32")
    y_pred = np.array([[0.9], [0.2], [0.3], [0.6]], "float32")
    np.testing.assert_allclose(
        _np(weighted_binary_crossentropy(y_true, y_pred)),
        _np(keras.losses.binary_crossentropy(y_true, y_pred)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        _np(WeightedBinaryCrossentropy()(y_true, y_pred)),
        _np(keras.losses.BinaryCrossentropy()(y_true, y_pred)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("positive_weight", [0.5, 2.0, 9.1])
def test_weighted_bce_matches_numpy(positive_weight):
    y_true = np.array([[1.0], [0.0], [1.0], [0.0]], "float32")
    y_pred = np.array([[0.9], [0.2], [0.3], [0.6]], "float32")
    # By hand: -(w * log p) for positives, -log(1 - p) for negatives.
    expected = np.array(
        [
            -positive_weight * np.log(0.9),
            -np.log(0.8),
            -positive_weight * np.log(0.3),
            -np.log(0.4),
        ]
    )
    loss = _np(weighted_binary_crossentropy(y_true, y_pred, positive_weight=positive_weight))
    assert loss.shape == (4,)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(
        _np(WeightedBinaryCrossentropy(positive_weight)(y_true, y_pred)),
        expected.mean(),
        rtol=1e-5,
    )


def test_weighted_bce_accepts_rank_one_labels():
    y_true = np.array([1.0, 0.0], "float32")
    y_pred = np.array([[0.7], [0.4]], "float32")
    loss = _np(weighted_binary_crossentropy(y_true, y_pred, positive_weight=3.0))
    np.testing.assert_allclose(loss, [-3.0 * np.log(0.7), -np.log(0.6)], rtol=1e-5)


# Numerical safety

ALL_LOSSES = [
    pytest.param(dice_loss, {}, id="dice"),
    pytest.param(bce_dice_loss, {"alpha": 0.5}, id="bce_dice"),
    pytest.param(weighted_binary_crossentropy, {"positive_weight": 9.0}, id="weighted_bce"),
]


@pytest.mark.parametrize(("fn", "kwargs"), ALL_LOSSES)
@pytest.mark.parametrize(
    ("truth", "prediction"),
    [
        (0.0, 0.0),  # empty masks / a batch of one class, predicted exactly 0
        (1.0, 1.0),  # all-one masks / all preterm, predicted exactly 1
        (0.0, 1.0),  # confidently wrong, exactly 1
        (1.0, 0.0),  # confidently wrong, exactly 0
    ],
)
def test_losses_are_finite_on_extreme_inputs(fn, kwargs, truth, prediction):
    y_true = np.full((2, 8, 8, 1), truth, "float32")
    y_pred = np.full((2, 8, 8, 1), prediction, "float32")
    loss = _np(fn(y_true, y_pred, **kwargs))
    assert loss.shape == (2,)
    assert np.all(np.isfinite(loss))


@pytest.mark.parametrize(("fn", "kwargs"), ALL_LOSSES)
def test_single_class_batch_matches_numpy(fn, kwargs):
    y_true = np.zeros((4, 1), "float32")  # a batch of controls only
    y_pred = np.array([[0.0], [0.1], [0.5], [1.0]], "float32")
    loss = _np(fn(y_true, y_pred, **kwargs))
    assert np.all(np.isfinite(loss))
    if fn is weighted_binary_crossentropy:
        np.testing.assert_allclose(loss, _np_bce(y_true, y_pred), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("fn", "kwargs"), ALL_LOSSES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_give_finite_float32(fn, kwargs, dtype):
    y_true, y_pred = _masks((2, 8, 8, 1))
    y_pred[0] = 1.0  # saturated, as a float16 sigmoid rounds to
    y_pred[1, :4] = 0.0
    low_true = keras.ops.cast(y_true, dtype)
    low_pred = keras.ops.cast(y_pred, dtype)
    loss = fn(low_true, low_pred, **kwargs)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.all(np.isfinite(_np(loss)))
    as_float32 = [_np(keras.ops.cast(x, "float32")) for x in (low_true, low_pred)]
    reference = _np(fn(*as_float32, **kwargs))
    np.testing.assert_allclose(_np(loss), reference, rtol=1e-5)


@pytest.fixture
def mixed_float16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def test_model_under_mixed_precision_trains_with_float32_losses(mixed_float16):
    keras.utils.set_random_seed(0)
    images, masks = _masks((4, 8, 8, 1))
    model = _tiny_segmenter()
    assert keras.backend.standardize_dtype(model(images[:1]).dtype) == "float16"
    loss = BCEDiceLoss()
    value = loss(masks, model(images))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    model.compile(optimizer="adam", loss=loss, metrics=[PerImageIoU()], jit_compile=False)
    history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# sample_weight


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(), BCEDiceLoss(), WeightedBinaryCrossentropy(positive_weight=4.0)],
    ids=["dice", "bce_dice", "weighted_bce"],
)
def test_sample_weight_zero_removes_an_image(loss):
    y_true, y_pred = _masks((2, 8, 8, 1))
    per_sample = _np(loss.call(y_true, y_pred))
    weighted = _np(loss(y_true, y_pred, sample_weight=np.array([1.0, 0.0], "float32")))
    # "sum_over_batch_size" divides by the batch size, 2, whatever the weights.
    np.testing.assert_allclose(weighted, per_sample[0] / 2, rtol=1e-5)
    # Whatever the second row holds (here: no mask at all), it does not count.
    y_true[1] = 0.0
    y_pred[1] = 1.0
    again = _np(loss(y_true, y_pred, sample_weight=np.array([1.0, 0.0], "float32")))
    np.testing.assert_allclose(again, weighted, rtol=1e-6)


def test_mean_with_sample_weight_reduction_averages_over_weighted_images():
    y_true, y_pred = _masks((3, 8, 8, 1))
    loss = BCEDiceLoss(reduction="mean_with_sample_weight")
    per_sample = _np(loss.call(y_true, y_pred))
    value = _np(loss(y_true, y_pred, sample_weight=np.array([1.0, 0.0, 1.0], "float32")))
    np.testing.assert_allclose(value, (per_sample[0] + per_sample[2]) / 2, rtol=1e-5)


# Class weight from labels


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, 0, 0, 1], 3.0),
        ([0, 1], 1.0),
        ([[0], [1], [1], [1]], 1 / 3),
        ([0, 0, np.nan, 1, None], 2.0),
        (np.array([0.0] * 319 + [1.0] * 35), 319 / 35),  # the paper's data
    ],
)
def test_positive_weight_from_labels(labels, expected):
    weight = positive_weight_from_labels(labels)
    assert isinstance(weight, float)
    assert weight == pytest.approx(expected)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([0, 0, np.nan], "n_positive=0"),
        ([1, 1], "n_negative=0"),
        ([], "n_positive=0"),
        ([0, 1, 2], "labels with value 2"),
    ],
)
def test_positive_weight_from_labels_rejects(labels, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        positive_weight_from_labels(labels)


# Arguments and configs

BAD_ARGUMENTS = [
    (BCEDiceLoss, {"alpha": 1.7}, "Received: alpha=1.7"),
    (BCEDiceLoss, {"alpha": -0.1}, "Received: alpha=-0.1"),
    (BCEDiceLoss, {"epsilon": 0.0}, "Received: epsilon=0.0"),
    (DiceLoss, {"epsilon": -1e-6}, "Received: epsilon=-1e-06"),
    (WeightedBinaryCrossentropy, {"positive_weight": 0}, "Received: positive_weight=0"),
    (WeightedBinaryCrossentropy, {"positive_weight": -2.0}, "Received: positive_weight=-2.0"),
    (WeightedBinaryCrossentropy, {"positive_weight": float("nan")}, "positive_weight=nan"),
    (WeightedBinaryCrossentropy, {"positive_weight": "heavy"}, "positive_weight='heavy'"),
]


@pytest.mark.parametrize(("cls", "kwargs", "match"), BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (bce_dice_loss, {"alpha": 1.7}, "Received: alpha=1.7"),
        (dice_loss, {"epsilon": 0}, "Received: epsilon=0"),
        (weighted_binary_crossentropy, {"positive_weight": 0}, "Received: positive_weight=0"),
    ],
)
def test_bad_arguments_to_functions_raise_value_error(fn, kwargs, match):
    y_true, y_pred = _masks((1, 4, 4, 1))
    with pytest.raises(ValueError, match=re.escape(match)):
        fn(y_true, y_pred, **kwargs)


LOSS_OBJECTS = [
    pytest.param(DiceLoss(), "dice_loss", id="dice_default"),
    pytest.param(DiceLoss(epsilon=1e-3, name="d", reduction="sum"), "d", id="dice"),
    pytest.param(BCEDiceLoss(), "bce_dice_loss", id="bce_dice_default"),
    pytest.param(BCEDiceLoss(alpha=0.25, epsilon=1e-4), "bce_dice_loss", id="bce_dice"),
    pytest.param(WeightedBinaryCrossentropy(), "weighted_binary_crossentropy", id="wbce_default"),
    pytest.param(
        WeightedBinaryCrossentropy(positive_weight=9.1), "weighted_binary_crossentropy", id="wbce"
    ),
]


@pytest.mark.parametrize(("loss", "name"), LOSS_OBJECTS)
def test_loss_config_round_trip(loss, name):
    config = loss.get_config()
    assert loss.name == name
    assert config["name"] == name
    restored = type(loss).from_config(config)
    assert restored.get_config() == config


@pytest.mark.parametrize(("loss", "name"), LOSS_OBJECTS)
def test_loss_serializes_without_custom_objects(loss, name):
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == f"cervixnet>{type(loss).__name__}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y_true, y_pred = _masks((2, 4, 4, 1))
    np.testing.assert_allclose(_np(restored(y_true, y_pred)), _np(loss(y_true, y_pred)))


def test_config_holds_exactly_the_constructor_arguments():
    assert set(BCEDiceLoss().get_config()) == {"name", "reduction", "dtype", "alpha", "epsilon"}
    assert set(DiceLoss().get_config()) == {"name", "reduction", "dtype", "epsilon"}
    assert set(WeightedBinaryCrossentropy().get_config()) == {
        "name",
        "reduction",
        "dtype",
        "positive_weight",
    }


def test_losses_module_imports_no_tensorflow():
    tree = ast.parse(Path(cervixnet.losses.__file__).read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ] + [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert not [name for name in imported if name.split(".")[0] == "tensorflow"]


# Models


def test_tiny_model_fits_saves_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    images, masks = _masks((4, 8, 8, 1))
    model = _tiny_segmenter()
    model.compile(
        optimizer="adam",
        loss=BCEDiceLoss(alpha=0.4),
        metrics=[PerImageIoU(), PerImageIoU(statistic="std")],
        jit_compile=False,
    )
    history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert {"iou", "iou_std"} <= set(history.history)

    path = tmp_path / "tiny.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.loss, BCEDiceLoss)
    assert reloaded.loss.alpha == pytest.approx(0.4)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )
    reloaded.evaluate(images, masks, verbose=0)


def test_joint_model_compiles_with_a_loss_per_output():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    features = keras.layers.Conv2D(2, 1, activation="relu", name="features")(inputs)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(features)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    label = keras.layers.Dense(1, activation="sigmoid", name="label")(pooled)
    model = keras.Model(inputs, {"mask": mask, "label": label}, name="tiny_joint")
    weight = positive_weight_from_labels([0, 0, 0, 1])
    model.compile(
        optimizer="adam",
        loss={"mask": BCEDiceLoss(0.5), "label": WeightedBinaryCrossentropy(weight)},
        loss_weights={"mask": 1.0, "label": 0.8},
        metrics={"label": [keras.metrics.AUC(name="auc")]},
        # Only weighted_metrics receive sample_weight: images without a mask are left out.
        weighted_metrics={"mask": [PerImageIoU()]},
        jit_compile=False,
    )
    images, masks = _masks((4, 8, 8, 1))
    labels = np.array([[0.0], [0.0], [0.0], [1.0]], "float32")
    has_mask = np.array([1.0, 1.0, 0.0, 1.0], "float32")  # the third image has no mask
    masks[2] = 0.0  # its placeholder mask: finite, ignored through its weight
    targets = {"mask": masks, "label": labels}
    sample_weight = {"mask": has_mask, "label": np.ones(4, "float32")}
    history = model.fit(
        images, targets, sample_weight=sample_weight, batch_size=2, epochs=1, verbose=0
    )
    assert {"loss", "mask_loss", "label_loss", "mask_iou", "label_auc"} <= set(history.history)
    assert all(np.isfinite(values[0]) for values in history.history.values())

    results = model.evaluate(
        images, targets, sample_weight=sample_weight, batch_size=4, verbose=0, return_dict=True
    )
    predicted = model.predict(images, verbose=0)
    kept = has_mask == 1
    expected_iou = np.mean(iou_per_image(masks[kept], predicted["mask"][kept]))
    assert results["mask_iou"] == pytest.approx(expected_iou, rel=1e-5, abs=1e-6)
    mask_loss = _np(BCEDiceLoss(0.5)(masks, predicted["mask"], sample_weight=has_mask))
    label_loss = _np(WeightedBinaryCrossentropy(weight)(labels, predicted["label"]))
    assert results["loss"] == pytest.approx(mask_loss + 0.8 * label_loss, rel=1e-4)
