"""Tests of cervixnet.metrics against scikit-learn, NumPy by hand, and each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.metrics import (
    f1_score,
    jaccard_score,
)

import cervixnet.metrics
from cervixnet.analysis import binary_figures
from cervixnet.metrics import (
    PerImageDice,
    PerImageIoU,
    Specificity,
    dice_per_image,
    iou_per_image,
    segmentation_summary,
)

# Fixtures and references


def _segmentations(n_images: int = 6, size: int = 8, seed: int = 0):
    """Deterministic truths (0/1) and probabilities, with an empty-truth image and a
    both-empty image among them."""
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n_images, size, size, 1)) > 0.5).astype("float32")
    y_pred = rng.random((n_images, size, size, 1)).astype("float32")
    y_true[0] = 0.0  # empty truth, non-empty prediction
    y_true[1] = 0.0  # empty truth and empty prediction
    y_pred[1] = 0.1
    y_pred[2] = 1.0  # full prediction
    return y_true, y_pred


def _sklearn_per_image(score, y_true, y_pred, threshold):
    """A scikit-learn pixel score per image; 1.0 where truth and prediction are empty."""
    truth = y_true.reshape(len(y_true), -1) > 0.5
    prediction = y_pred.reshape(len(y_pred), -1) > threshold
    return np.array(
        [score(t, p, zero_division=1.0) for t, p in zip(truth, prediction, strict=True)]
    )


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


# NumPy segmentation metrics


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
@pytest.mark.parametrize("squeeze", [False, True])
@pytest.mark.parametrize(
    ("fn", "score"), [(iou_per_image, jaccard_score), (dice_per_image, f1_score)]
)
def test_per_image_scores_match_sklearn(fn, score, threshold, squeeze):
    y_true, y_pred = _segmentations()
    if squeeze:
        y_true, y_pred = y_true[..., 0], y_pred[..., 0]
    values = fn(y_true, y_pred, threshold=threshold)
    assert values.shape == (6,)
    np.testing.assert_allclose(values, _sklearn_per_image(score, y_true, y_pred, threshold))


@pytest.mark.parametrize(
    ("truth", "prediction", "expected"),
    [
        (0.0, 0.0, 1.0),  # both empty: a perfect match
        (1.0, 1.0, 1.0),  # both full
        (0.0, 1.0, 0.0),
        (1.0, 0.0, 0.0),
        (1.0, 0.5, 0.0),  # 0.5 is not above the threshold
    ],
)
@pytest.mark.parametrize("fn", [iou_per_image, dice_per_image])
def test_per_image_score_edge_cases(fn, truth, prediction, expected):
    y_true = np.full((2, 4, 4), truth)
    y_pred = np.full((2, 4, 4), prediction)
    np.testing.assert_array_equal(fn(y_true, y_pred), [expected, expected])


def test_binary_predictions_and_known_values():
    y_true = np.zeros((1, 4, 4), "uint8")
    y_true[0, :2] = 1  # 8 pixels
    y_pred = np.zeros((1, 4, 4), "uint8")
    y_pred[0, 1:3] = 1  # 8 pixels, 4 shared
    assert iou_per_image(y_true, y_pred)[0] == pytest.approx(4 / 12)
    assert dice_per_image(y_true, y_pred)[0] == pytest.approx(8 / 16)


def test_segmentation_summary_is_mean_and_population_std():
    y_true, y_pred = _segmentations()
    summary = segmentation_summary(y_true, y_pred)
    iou = _sklearn_per_image(jaccard_score, y_true, y_pred, 0.5)
    dice = _sklearn_per_image(f1_score, y_true, y_pred, 0.5)
    assert summary == pytest.approx(
        {
            "iou_mean": np.mean(iou),
            "iou_std": np.std(iou, ddof=0),
            "dice_mean": np.mean(dice),
            "dice_std": np.std(dice, ddof=0),
            "n_images": 6,
        }
    )
    assert isinstance(summary["n_images"], int)
    assert all(isinstance(value, float) for key, value in summary.items() if key != "n_images")


@pytest.mark.parametrize(
    ("y_true", "y_pred", "kwargs", "match"),
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), {}, "same shape"),
        (np.zeros((2, 4, 4, 1)), np.zeros((3, 4, 4, 1)), {}, "same shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {}, "same shape"),
        (np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), {}, "at least one image"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), {"threshold": 1.5}, "threshold=1.5"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), {"threshold": -0.1}, "threshold=-0.1"),
    ],
)
def test_segmentation_summary_rejects(y_true, y_pred, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        segmentation_summary(y_true, y_pred, **kwargs)


# NumPy classification summary

LABELS = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0], "float64")
PROBABILITIES = np.array([0.1, 0.6, 0.8, 0.4, 0.3, 0.9, 0.55, 0.2, 0.5, 0.05])


# Streaming Keras metrics

PER_IMAGE = [
    pytest.param(PerImageIoU, iou_per_image, id="iou"),
    pytest.param(PerImageDice, dice_per_image, id="dice"),
]


@pytest.mark.parametrize("threshold", [0.5, 0.7])
@pytest.mark.parametrize("statistic", ["mean", "std"])
@pytest.mark.parametrize(("cls", "fn"), PER_IMAGE)
def test_streaming_metric_equals_numpy_over_all_images(cls, fn, statistic, threshold):
    y_true, y_pred = _segmentations(n_images=7)
    metric = cls(threshold=threshold, statistic=statistic)
    for start in range(0, 7, 3):  # batches of 3, 3 and 1 images
        metric.update_state(y_true[start : start + 3], y_pred[start : start + 3])
    scores = fn(y_true, y_pred, threshold=threshold)
    expected = np.mean(scores) if statistic == "mean" else np.std(scores)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("weight_shape", [(-1,), (-1, 1)])
@pytest.mark.parametrize("statistic", ["mean", "std"])
@pytest.mark.parametrize(("cls", "fn"), PER_IMAGE)
def test_streaming_metric_sample_weight_zero_excludes_images(cls, fn, statistic, weight_shape):
    y_true, y_pred = _segmentations(n_images=6)
    keep = np.array([1, 0, 1, 1, 0, 1], "float32")
    metric = cls(statistic=statistic)
    for start in (0, 3):
        weight = keep[start : start + 3].reshape(weight_shape)
        metric.update_state(y_true[start : start + 3], y_pred[start : start + 3], weight)
    scores = fn(y_true[keep == 1], y_pred[keep == 1])
    expected = np.mean(scores) if statistic == "mean" else np.std(scores)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("cls", "fn"), PER_IMAGE)
def test_streaming_metric_takes_masks_without_channel_axis(cls, fn):
    y_true, y_pred = _segmentations()
    metric = cls()
    metric.update_state(y_true[..., 0], y_pred)
    assert float(metric.result()) == pytest.approx(np.mean(fn(y_true, y_pred)), rel=1e-6)


@pytest.mark.parametrize(("cls", "fn"), PER_IMAGE)
def test_streaming_metric_reset_state(cls, fn):
    y_true, y_pred = _segmentations()
    metric = cls()
    assert float(metric.result()) == 0.0  # nothing seen yet
    metric.update_state(y_true[:3], y_pred[:3])
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state(y_true[3:], y_pred[3:])
    assert float(metric.result()) == pytest.approx(np.mean(fn(y_true[3:], y_pred[3:])), rel=1e-6)


def test_streaming_metric_accepts_low_precision_predictions():
    y_true, y_pred = _segmentations()
    metric = PerImageIoU()
    metric.update_state(keras.ops.cast(y_true, "bfloat16"), keras.ops.cast(y_pred, "float16"))
    expected = np.mean(iou_per_image(y_true, _np(keras.ops.cast(y_pred, "float16"))))
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)


def test_specificity_matches_hand_counts():
    y_true = LABELS[:, None]
    y_pred = PROBABILITIES[:, None]
    metric = Specificity()
    for start in range(0, 10, 4):
        metric.update_state(y_true[start : start + 4], y_pred[start : start + 4])
    negatives = LABELS == 0
    tn = np.sum(negatives & (PROBABILITIES <= 0.5))
    fp = np.sum(negatives & (PROBABILITIES > 0.5))
    assert (tn, fp) == (4, 2)
    assert float(metric.result()) == pytest.approx(tn / (tn + fp))
    assert float(metric.result()) == pytest.approx(
        binary_figures(LABELS, PROBABILITIES, 0.5)["specificity"]
    )
    metric.reset_state()
    assert float(metric.result()) == 0.0


@pytest.mark.parametrize("weight_shape", [(-1,), (-1, 1)])
def test_specificity_sample_weight(weight_shape):
    y_true = np.array([[0], [0], [0], [1]], "float32")
    y_pred = np.array([[0.1], [0.9], [0.8], [0.9]], "float32")
    weight = np.array([2.0, 1.0, 0.0, 1.0], "float32").reshape(weight_shape)
    metric = Specificity(threshold=0.5)
    metric.update_state(y_true, y_pred, sample_weight=weight)
    assert float(metric.result()) == pytest.approx(2.0 / (2.0 + 1.0))  # TN 2, FP 1, one left out


def test_specificity_threshold():
    metric = Specificity(threshold=0.85)
    metric.update_state([[0], [0], [0]], [[0.1], [0.9], [0.8]])
    assert float(metric.result()) == pytest.approx(2 / 3)


# Arguments and configs


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (PerImageIoU, {"statistic": "median"}, "Received: statistic='median'"),
        (PerImageDice, {"statistic": "median"}, "Received: statistic='median'"),
        (PerImageIoU, {"threshold": 1.5}, "Received: threshold=1.5"),
        (PerImageDice, {"threshold": -0.1}, "Received: threshold=-0.1"),
        (Specificity, {"threshold": 1.5}, "Received: threshold=1.5"),
    ],
)
def test_bad_arguments_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        cls(**kwargs)


@pytest.mark.parametrize("fn", [iou_per_image, dice_per_image])
def test_numpy_functions_reject_bad_threshold(fn):
    with pytest.raises(ValueError, match=re.escape("Received: threshold=1.5")):
        fn(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), threshold=1.5)


@pytest.mark.parametrize(
    ("metric", "name"),
    [
        (PerImageIoU(), "iou"),
        (PerImageIoU(statistic="std"), "iou_std"),
        (PerImageDice(), "dice"),
        (PerImageDice(statistic="std"), "dice_std"),
        (PerImageDice(threshold=0.3, name="mask_dice"), "mask_dice"),
        (Specificity(), "specificity"),
        (Specificity(threshold=0.2, name="spec"), "spec"),
    ],
)
def test_metric_names_and_config_round_trip(metric, name):
    assert metric.name == name
    config = metric.get_config()
    restored = type(metric).from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(metric)
    assert serialized["registered_name"] == f"cervixnet>{type(metric).__name__}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(metric)
    assert restored.get_config() == config


def test_metric_config_holds_exactly_the_constructor_arguments():
    assert set(PerImageIoU().get_config()) == {"name", "dtype", "threshold", "statistic", "classes"}
    assert set(Specificity().get_config()) == {"name", "dtype", "threshold"}


def test_metrics_module_imports_no_tensorflow():
    tree = ast.parse(Path(cervixnet.metrics.__file__).read_text())
    modules = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    modules += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in modules if name.split(".")[0] == "tensorflow"]
