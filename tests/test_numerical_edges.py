"""Empty masks, full masks, saturated predictions and one-class batches give finite values.

Every loss and training metric of cervixnet, and the NumPy figures of the report, on the
inputs that break naive formulas (0 / 0 in Dice and IoU, log(0) in cross-entropy).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from cervixnet import losses, metrics

SHAPE = (2, 8, 8, 1)
MASKS = {
    "empty": np.zeros(SHAPE, np.float32),
    "full": np.ones(SHAPE, np.float32),
}
PREDICTIONS = {
    "zeros": np.zeros(SHAPE, np.float32),  # saturated: log(0) unless clipped
    "ones": np.ones(SHAPE, np.float32),
    "half": np.full(SHAPE, 0.5, np.float32),
}
MASK_LOSSES = {
    "DiceLoss": losses.DiceLoss,
    "BCEDiceLoss": losses.BCEDiceLoss,
}
MASK_METRICS = {"PerImageIoU": metrics.PerImageIoU, "PerImageDice": metrics.PerImageDice}
LABELS = {
    "all control": np.zeros((4, 1), np.float32),
    "all preterm": np.ones((4, 1), np.float32),
}
LABEL_PREDICTIONS = {
    "zeros": np.zeros((4, 1), np.float32),
    "ones": np.ones((4, 1), np.float32),
}
LABEL_METRICS = {
    "WeightedBinaryCrossentropy": lambda: losses.WeightedBinaryCrossentropy(positive_weight=9.0),
    "Specificity": metrics.Specificity,
    "AUC": lambda: keras.metrics.AUC(name="auc"),
    "Precision": lambda: keras.metrics.Precision(name="precision"),
    "Recall": lambda: keras.metrics.Recall(name="recall"),
}


def _value(make, y_true, y_pred) -> float:
    thing = make()
    if isinstance(thing, keras.losses.Loss):
        return float(thing(y_true, y_pred))
    thing.update_state(y_true, y_pred)
    return float(thing.result())


@pytest.mark.parametrize("prediction", PREDICTIONS, ids=str)
@pytest.mark.parametrize("mask", MASKS, ids=str)
@pytest.mark.parametrize("name", [*MASK_LOSSES, *MASK_METRICS], ids=str)
def test_mask_losses_and_metrics_are_finite(name, mask, prediction):
    make = {**MASK_LOSSES, **MASK_METRICS}[name]
    value = _value(make, MASKS[mask], PREDICTIONS[prediction])
    assert math.isfinite(value), f"{name}({mask}, {prediction}) = {value}"
    if name in MASK_METRICS and prediction != "half":
        # A prediction that matches the mask scores 1, two empty masks included; else 0.
        agree = (mask, prediction) in (("empty", "zeros"), ("full", "ones"))
        assert value == pytest.approx(1.0 if agree else 0.0, abs=1e-6)


@pytest.mark.parametrize("prediction", LABEL_PREDICTIONS, ids=str)
@pytest.mark.parametrize("labels", LABELS, ids=str)
@pytest.mark.parametrize("name", LABEL_METRICS, ids=str)
def test_label_loss_and_metrics_are_finite_on_one_class_batches(name, labels, prediction):
    value = _value(LABEL_METRICS[name], LABELS[labels], LABEL_PREDICTIONS[prediction])
    assert math.isfinite(value), f"{name}({labels}, {prediction}) = {value}"


@pytest.mark.parametrize("mask", MASKS, ids=str)
def test_gradients_of_the_mask_losses_are_finite(mask):
    import tensorflow as tf

    y_true = tf.constant(MASKS[mask])
    for prediction in PREDICTIONS.values():
        y_pred = tf.Variable(prediction)
        for name, make in MASK_LOSSES.items():
            with tf.GradientTape() as tape:
                loss = make()(y_true, y_pred)
            gradient = tape.gradient(loss, y_pred).numpy()
            assert np.all(np.isfinite(gradient)), name


@pytest.mark.parametrize("mask", MASKS, ids=str)
def test_report_figures_are_finite(mask):
    for prediction in PREDICTIONS.values():
        iou = metrics.iou_per_image(MASKS[mask][..., 0], prediction[..., 0])
        dice = metrics.dice_per_image(MASKS[mask][..., 0], prediction[..., 0])
        assert np.all(np.isfinite(iou)) and np.all(np.isfinite(dice))
