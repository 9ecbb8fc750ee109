"""Metrics: NumPy functions for evaluation, and streaming Keras metrics for training.

Conventions shared by both:

- A prediction is positive where ``y_pred > threshold`` (strictly, like ``keras.metrics``); a
  truth is positive where ``y_true > 0.5``. Binary 0/1 inputs are therefore taken as they are.
- An image whose truth and prediction are both empty scores IoU = Dice = 1.0 (a perfect match).
- A standard deviation is over images, population form (``ddof=0``), like the paper's
  "mean IoU (std)".

The NumPy functions (``iou_per_image``, ``dice_per_image``, ``segmentation_summary``) serve
evaluation; the classification figures of every table and report are
``cervixnet.analysis.binary_figures``'s (a probability >= the threshold is preterm). The Keras
metrics (``PerImageIoU``,
``PerImageDice``, ``Specificity``) use ``keras.ops`` only, run on every backend, and are
registered with Keras under the package name ``cervixnet``. For AUC, precision and recall
during training use ``keras.metrics.AUC``, ``Precision`` and ``Recall``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from cervixnet.checks import positive_int, unit_interval

__all__ = [
    "PerImageDice",
    "PerImageIoU",
    "Specificity",
    "class_ids",
    "class_scores_per_image",
    "dice_per_image",
    "iou_per_image",
    "segmentation_summary",
]

_STATISTICS = ("mean", "std")

# NumPy functions


def _binary_masks(y_true: Any, y_pred: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Binarizes both and flattens each image: two bool arrays of shape ``(N, H * W)``."""
    threshold = unit_interval("threshold", threshold)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim == 4 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    if y_pred.ndim == 4 and y_pred.shape[-1] == 1:
        y_pred = y_pred[..., 0]
    if y_true.ndim != 3 or y_true.shape != y_pred.shape:
        raise ValueError(
            "`y_true` and `y_pred` must have the same shape, (N, H, W) or (N, H, W, 1). "
            f"Received: y_true.shape={np.shape(y_true)}, y_pred.shape={np.shape(y_pred)}"
        )
    flat = (y_true.shape[0], y_true.shape[1] * y_true.shape[2])
    return (y_true > 0.5).reshape(flat), (y_pred > threshold).reshape(flat)


def iou_per_image(y_true: Any, y_pred: Any, threshold: float = 0.5) -> np.ndarray:
    """Jaccard index |T ∩ P| / |T ∪ P| of each image.

    Args:
        y_true: Masks, shape ``(N, H, W)`` or ``(N, H, W, 1)``; positive where > 0.5.
        y_pred: Probabilities or binary masks, same shape; positive where > ``threshold``.
        threshold: In [0, 1]. Defaults to 0.5.

    Returns:
        Float64 array of shape ``(N,)``; 1.0 for an image with empty truth and prediction.
    """
    truth, prediction = _binary_masks(y_true, y_pred, threshold)
    intersection = np.count_nonzero(truth & prediction, axis=1)
    union = np.count_nonzero(truth | prediction, axis=1)
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def dice_per_image(y_true: Any, y_pred: Any, threshold: float = 0.5) -> np.ndarray:
    """Dice coefficient 2 |T ∩ P| / (|T| + |P|) of each image (F1 score of its pixels).

    Args:
        y_true: Masks, shape ``(N, H, W)`` or ``(N, H, W, 1)``; positive where > 0.5.
        y_pred: Probabilities or binary masks, same shape; positive where > ``threshold``.
        threshold: In [0, 1]. Defaults to 0.5.

    Returns:
        Float64 array of shape ``(N,)``; 1.0 for an image with empty truth and prediction.
    """
    truth, prediction = _binary_masks(y_true, y_pred, threshold)
    intersection = np.count_nonzero(truth & prediction, axis=1)
    total = np.count_nonzero(truth, axis=1) + np.count_nonzero(prediction, axis=1)
    return np.where(total > 0, 2.0 * intersection / np.maximum(total, 1), 1.0)


def class_ids(masks: Any, classes: int) -> np.ndarray:
    """Masks of ``classes`` foreground classes as class ids ``(N, H, W)``: softmax
    probabilities ``(N, H, W, classes + 1)`` by their largest channel, ids ``(N, H, W)`` or
    ``(N, H, W, 1)`` as they are.

    Raises:
        ValueError: a shape that is neither, or an id above ``classes``.
    """
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == classes + 1 and classes > 0:
        return np.argmax(masks, axis=-1)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim != 3:
        raise ValueError(
            f"`masks` must be class ids (N, H, W) or probabilities (N, H, W, {classes + 1}). "
            f"Received: shape {masks.shape}"
        )
    ids = masks.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > classes):
        raise ValueError(
            f"class ids must lie in 0..{classes}. Received: ids {ids.min()} to {ids.max()}"
        )
    return ids


def class_scores_per_image(y_true: Any, y_pred: Any, classes: int) -> dict[str, np.ndarray]:
    """IoU and Dice of each foreground class of each image, and of their union (the whole
    organ, every class against the background).

    Args:
        y_true: Class ids ``(N, H, W)`` or ``(N, H, W, 1)``, 0 the background.
        y_pred: Class ids, or softmax probabilities ``(N, H, W, classes + 1)`` (argmax).
        classes: the number of foreground classes ``K`` (>= 1).

    Returns:
        ``{"iou": (N, K), "dice": (N, K), "union_iou": (N,), "union_dice": (N,)}``, float64;
        1.0 where a class is absent from both, as for one class.
    """
    truth, prediction = class_ids(y_true, classes), class_ids(y_pred, classes)
    if truth.shape != prediction.shape:
        raise ValueError(
            f"`y_true` and `y_pred` must hold masks of one shape. Received: {truth.shape} and "
            f"{prediction.shape}"
        )
    iou = np.stack(
        [iou_per_image(truth == k, prediction == k) for k in range(1, classes + 1)], axis=1
    )
    dice = np.stack(
        [dice_per_image(truth == k, prediction == k) for k in range(1, classes + 1)], axis=1
    )
    return {
        "iou": iou,
        "dice": dice,
        "union_iou": iou_per_image(truth > 0, prediction > 0),
        "union_dice": dice_per_image(truth > 0, prediction > 0),
    }


def segmentation_summary(y_true: Any, y_pred: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Mean and standard deviation over images of IoU and Dice, as the paper reports them.

    Args:
        y_true: Masks, shape ``(N, H, W)`` or ``(N, H, W, 1)``, N >= 1.
        y_pred: Probabilities or binary masks, same shape.
        threshold: In [0, 1]. Defaults to 0.5.

    Returns:
        ``{"iou_mean", "iou_std", "dice_mean", "dice_std", "n_images"}``: floats and an int;
        the std is the population std over images (``ddof=0``).

    Raises:
        ValueError: If there is no image, the shapes differ, or ``threshold`` is out of range.
    """
    iou = iou_per_image(y_true, y_pred, threshold)
    if iou.size == 0:
        raise ValueError("`y_true` must hold at least one image. Received: y_true with N=0")
    dice = dice_per_image(y_true, y_pred, threshold)
    return {
        "iou_mean": float(np.mean(iou)),
        "iou_std": float(np.std(iou)),
        "dice_mean": float(np.mean(dice)),
        "dice_std": float(np.std(dice)),
        "n_images": int(iou.size),
    }


# Keras metrics


def _check_statistic(statistic: str) -> str:
    if statistic not in _STATISTICS:
        raise ValueError(
            f"`statistic` must be one of {_STATISTICS}. Received: statistic={statistic!r}"
        )
    return statistic


def _per_image_weight(sample_weight: Any, scores: Any) -> Any:
    """A weight per image, shape ``(B,)``, from None, ``(B,)`` or ``(B, 1)``."""
    if sample_weight is None:
        return ops.ones_like(scores)
    weight = ops.cast(ops.convert_to_tensor(sample_weight), scores.dtype)
    return ops.reshape(weight, (-1,)) * ops.ones_like(scores)


def _binary_pair(y_true: Any, y_pred: Any, threshold: float) -> tuple[Any, Any]:
    """float32 0/1 tensors of one shape: truth > 0.5, prediction > ``threshold``."""
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_true.shape) + 1 == len(y_pred.shape) and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, axis=-1)
    elif len(y_pred.shape) + 1 == len(y_true.shape) and y_true.shape[-1] == 1:
        y_pred = ops.expand_dims(y_pred, axis=-1)
    truth = ops.cast(ops.cast(y_true, "float32") > 0.5, "float32")
    prediction = ops.cast(ops.cast(y_pred, "float32") > threshold, "float32")
    return truth, prediction


def _class_pair(y_true: Any, y_pred: Any, classes: int) -> tuple[Any, Any]:
    """float32 one-hot masks ``(B, H, W, classes)`` of the foreground classes: the truth's
    class ids, and the prediction's largest softmax channel."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 4:
        y_true = y_true[..., 0]
    ids = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
    truth = ops.one_hot(ids, classes + 1, dtype="float32")[..., 1:]
    predicted_ids = ops.argmax(ops.convert_to_tensor(y_pred), axis=-1)
    prediction = ops.one_hot(predicted_ids, classes + 1, dtype="float32")[..., 1:]
    return truth, prediction


class _PerImageScore(keras.metrics.Metric):
    """Streams a per-image score: weighted sum, sum of squares and count; mean or std."""

    _default_name = ""

    def __init__(
        self,
        threshold: float = 0.5,
        statistic: str = "mean",
        name: str | None = None,
        dtype: Any = None,
        classes: int = 1,
    ) -> None:
        threshold = unit_interval("threshold", threshold)
        statistic = _check_statistic(statistic)
        classes = positive_int("classes", classes)
        if name is None:
            name = self._default_name if statistic == "mean" else f"{self._default_name}_std"
        super().__init__(name=name, dtype=dtype)
        self.threshold = threshold
        self.statistic = statistic
        self.classes = classes
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.total_squares = self.add_variable(shape=(), initializer="zeros", name="total_squares")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def _scores(self, truth: Any, prediction: Any, axes: tuple[int, ...]) -> Any:
        """Scores over ``axes`` of 0/1 float32 masks (per image, or per image and class)."""
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Adds a batch. ``sample_weight``: one weight per image, ``(B,)`` or ``(B, 1)``."""
        if self.classes == 1:
            truth, prediction = _binary_pair(y_true, y_pred, self.threshold)
            scores = self._scores(truth, prediction, _sample_axes(truth))
        else:  # the mean over the classes of each image's per-class score
            truth, prediction = _class_pair(y_true, y_pred, self.classes)
            scores = ops.mean(self._scores(truth, prediction, (1, 2)), axis=-1)
        weight = _per_image_weight(sample_weight, scores)
        self.total.assign_add(ops.cast(ops.sum(weight * scores), self.dtype))
        self.total_squares.assign_add(ops.cast(ops.sum(weight * ops.square(scores)), self.dtype))
        self.count.assign_add(ops.cast(ops.sum(weight), self.dtype))

    def result(self) -> Any:
        """The weighted mean (or population std) of the scores; 0.0 before any image."""
        mean = ops.divide_no_nan(self.total, self.count)
        if self.statistic == "mean":
            return mean
        mean_square = ops.divide_no_nan(self.total_squares, self.count)
        return ops.sqrt(ops.maximum(mean_square - ops.square(mean), 0.0))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"threshold": self.threshold, "statistic": self.statistic, "classes": self.classes}
        )
        return config


def _sample_axes(x: Any) -> tuple[int, ...]:
    return tuple(range(1, len(x.shape)))


@keras.saving.register_keras_serializable(package="cervixnet")
class PerImageIoU(_PerImageScore):
    """Streaming IoU per image, averaged (or its std) over all images seen.

    Unlike ``keras.metrics.BinaryIoU``, which pools the pixels of all images, this scores each
    image and then averages, like the paper's "mean IoU (std)" and :func:`iou_per_image`.

    Args:
        threshold: A prediction is positive where it is > ``threshold``, in [0, 1].
            Defaults to 0.5.
        statistic: ``"mean"`` or ``"std"`` (population std over images). Defaults to "mean".
        name: Defaults to ``"iou"`` (mean) or ``"iou_std"`` (std).
        dtype: Dtype of the state. Defaults to None (``keras.config.floatx()``).

        classes: The mask's foreground classes. Defaults to 1 (a binary mask). With more, the
            truth holds class ids, the prediction is a softmax over ``classes + 1`` channels
            (its largest channel wins; ``threshold`` is unused), and an image scores the mean
            IoU of its classes.

    ``update_state(y_true, y_pred, sample_weight=None)`` takes masks ``(B, H, W, 1)`` or
    ``(B, H, W)`` and an optional weight per image, ``(B,)`` or ``(B, 1)``; weight 0 leaves an
    image out (e.g. one without a mask).
    """

    _default_name = "iou"

    def _scores(self, truth: Any, prediction: Any, axes: tuple[int, ...]) -> Any:
        intersection = ops.sum(truth * prediction, axis=axes)
        union = ops.sum(truth, axis=axes) + ops.sum(prediction, axis=axes) - intersection
        return ops.where(union > 0, ops.divide_no_nan(intersection, union), 1.0)


@keras.saving.register_keras_serializable(package="cervixnet")
class PerImageDice(_PerImageScore):
    """Streaming Dice coefficient per image, averaged (or its std) over all images seen.

    Args:
        threshold: A prediction is positive where it is > ``threshold``, in [0, 1].
            Defaults to 0.5.
        statistic: ``"mean"`` or ``"std"`` (population std over images). Defaults to "mean".
        name: Defaults to ``"dice"`` (mean) or ``"dice_std"`` (std).
        dtype: Dtype of the state. Defaults to None (``keras.config.floatx()``).
        classes: as for :class:`PerImageIoU` (the mean Dice of the classes).

    ``update_state`` is as for :class:`PerImageIoU`.
    """

    _default_name = "dice"

    def _scores(self, truth: Any, prediction: Any, axes: tuple[int, ...]) -> Any:
        intersection = ops.sum(truth * prediction, axis=axes)
        total = ops.sum(truth, axis=axes) + ops.sum(prediction, axis=axes)
        return ops.where(total > 0, ops.divide_no_nan(2.0 * intersection, total), 1.0)


@keras.saving.register_keras_serializable(package="cervixnet")
class Specificity(keras.metrics.Metric):
    """Streaming specificity TN / (TN + FP) of a binary classifier; 0.0 with no negative.

    Args:
        threshold: A prediction is positive where it is > ``threshold``, in [0, 1].
            Defaults to 0.5.
        name: Defaults to ``"specificity"``.
        dtype: Dtype of the state. Defaults to None (``keras.config.floatx()``).

    ``update_state(y_true, y_pred, sample_weight=None)`` takes labels and probabilities of one
    shape, e.g. ``(B, 1)``, and an optional weight per sample, ``(B,)`` or ``y_true``'s shape.
    """

    def __init__(
        self, threshold: float = 0.5, name: str = "specificity", dtype: Any = None
    ) -> None:
        threshold = unit_interval("threshold", threshold)
        super().__init__(name=name, dtype=dtype)
        self.threshold = threshold
        self.true_negatives = self.add_variable(
            shape=(), initializer="zeros", name="true_negatives"
        )
        self.false_positives = self.add_variable(
            shape=(), initializer="zeros", name="false_positives"
        )

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        truth, prediction = _binary_pair(y_true, y_pred, self.threshold)
        weight = ops.ones_like(truth)
        if sample_weight is not None:
            sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            while len(sample_weight.shape) < len(truth.shape):
                sample_weight = ops.expand_dims(sample_weight, axis=-1)
            weight = weight * sample_weight
        negative = (1.0 - truth) * weight
        self.true_negatives.assign_add(ops.cast(ops.sum(negative * (1.0 - prediction)), self.dtype))
        self.false_positives.assign_add(ops.cast(ops.sum(negative * prediction), self.dtype))

    def result(self) -> Any:
        return ops.divide_no_nan(self.true_negatives, self.true_negatives + self.false_positives)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"threshold": self.threshold})
        return config
