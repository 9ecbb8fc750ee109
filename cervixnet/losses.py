"""Losses of the joint model: BCE + Dice for the mask, weighted BCE for the preterm label.

Each loss is a pure function on tensors that returns one value per sample, shape ``(batch,)``,
plus a thin :class:`keras.losses.Loss` subclass that calls it. Per-sample values let Keras apply
its reduction and ``sample_weight`` (a row without a mask gets weight 0 for the mask loss).

Written with ``keras.ops`` only, so they run on every Keras 3 backend. Inputs are cast to
float32 inside, so they are safe under mixed precision (``float16``/``bfloat16`` predictions).
Probabilities, not logits, are expected: the heads end in a sigmoid.

The classes are registered with Keras under the package name ``cervixnet``: once ``cervixnet``
is imported, ``keras.models.load_model`` restores them without ``custom_objects``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from cervixnet.checks import finite_positive, unit_interval

__all__ = [
    "BCEDiceLoss",
    "CEDiceLoss",
    "DiceLoss",
    "WeightedBinaryCrossentropy",
    "bce_dice_loss",
    "ce_dice_loss",
    "class_one_hot",
    "dice_loss",
    "positive_weight_from_labels",
    "weighted_binary_crossentropy",
]

# Helpers


def _prepare(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Casts both to float32 and matches ranks when one lacks a trailing axis of size 1.

    Masks may come as ``(B, H, W)`` against predictions ``(B, H, W, 1)``, and labels as
    ``(B,)`` against ``(B, 1)``: the tensor with the missing axis gets it back.
    """
    y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    rank_true, rank_pred = len(y_true.shape), len(y_pred.shape)
    if rank_true + 1 == rank_pred and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, axis=-1)
    elif rank_pred + 1 == rank_true and y_true.shape[-1] == 1:
        y_pred = ops.expand_dims(y_pred, axis=-1)
    return y_true, y_pred


def _sample_axes(x: Any) -> tuple[int, ...] | None:
    """The non-batch axes of ``x``; None for a rank-1 tensor (already one value per sample)."""
    rank = len(x.shape)
    return tuple(range(1, rank)) if rank > 1 else None


def _per_sample_mean(x: Any) -> Any:
    axes = _sample_axes(x)
    return x if axes is None else ops.mean(x, axis=axes)


def _per_sample_sum(x: Any) -> Any:
    axes = _sample_axes(x)
    return x if axes is None else ops.sum(x, axis=axes)


def _binary_crossentropy(y_true: Any, y_pred: Any, positive_weight: float = 1.0) -> Any:
    """Element-wise BCE on float32 probabilities, clipped to [eps, 1 - eps] like Keras' BCE."""
    eps = keras.config.epsilon()
    y_pred = ops.clip(y_pred, eps, 1.0 - eps)
    positive = positive_weight * y_true * ops.log(y_pred)
    negative = (1.0 - y_true) * ops.log(1.0 - y_pred)
    return -(positive + negative)


# Functions


def dice_loss(y_true: Any, y_pred: Any, epsilon: float = 1e-6) -> Any:
    """Soft Dice loss in the paper's squared form, one value per image.

    ``1 - (2 * sum(y * p) + epsilon) / (sum(y**2) + sum(p**2) + epsilon)``, the sums running
    over all non-batch axes. ``epsilon`` sits in the numerator too, so an image whose truth and
    prediction are both empty scores 0 (a perfect match), not 1.

    Args:
        y_true: Masks in [0, 1], shape ``(B, H, W, 1)`` or ``(B, H, W)``.
        y_pred: Probabilities in [0, 1], same shape (a trailing axis of size 1 may differ).
        epsilon: Smoothing term (> 0). Defaults to 1e-6.

    Returns:
        Float32 tensor of shape ``(B,)``, values in [0, 1].
    """
    epsilon = finite_positive("epsilon", epsilon)
    y_true, y_pred = _prepare(y_true, y_pred)
    intersection = _per_sample_sum(y_true * y_pred)
    denominator = _per_sample_sum(ops.square(y_true)) + _per_sample_sum(ops.square(y_pred))
    return 1.0 - (2.0 * intersection + epsilon) / (denominator + epsilon)


def bce_dice_loss(y_true: Any, y_pred: Any, alpha: float = 0.5, epsilon: float = 1e-6) -> Any:
    """The paper's segmentation loss ``alpha * BCE + (1 - alpha) * Dice``, one value per image.

    BCE is the mean pixel binary cross-entropy of each image (probabilities clipped to
    ``[keras.config.epsilon(), 1 - keras.config.epsilon()]``); Dice is :func:`dice_loss`.

    Args:
        y_true: Masks in [0, 1], shape ``(B, H, W, 1)`` or ``(B, H, W)``.
        y_pred: Probabilities in [0, 1], same shape (a trailing axis of size 1 may differ).
        alpha: Weight of the BCE term, in [0, 1]. Defaults to 0.5 (the paper).
        epsilon: Smoothing term of the Dice loss (> 0). Defaults to 1e-6.

    Returns:
        Float32 tensor of shape ``(B,)``.
    """
    alpha = unit_interval("alpha", alpha)
    epsilon = finite_positive("epsilon", epsilon)
    y_true, y_pred = _prepare(y_true, y_pred)
    bce = _per_sample_mean(_binary_crossentropy(y_true, y_pred))
    return alpha * bce + (1.0 - alpha) * dice_loss(y_true, y_pred, epsilon=epsilon)


def class_one_hot(y_true: Any, channels: int) -> Any:
    """Class-id masks ``(B, H, W)`` or ``(B, H, W, 1)`` as float32 one-hot ``(B, H, W,
    channels)``; masks already one-hot (``channels`` on the last axis) are returned as they
    are."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 4 and y_true.shape[-1] == channels and channels > 1:
        return ops.cast(y_true, "float32")
    if len(y_true.shape) == 4:
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.one_hot(ops.cast(y_true, "int32"), channels, dtype="float32")


def ce_dice_loss(y_true: Any, y_pred: Any, alpha: float = 0.5, epsilon: float = 1e-6) -> Any:
    """The compound loss of several classes, one value per image: ``alpha * CE + (1 - alpha)
    * Dice``, the multi-class form of :func:`bce_dice_loss`.

    CE is the mean pixel categorical cross-entropy (probabilities clipped to
    ``[keras.config.epsilon(), 1]``); Dice is :func:`dice_loss` of each foreground class
    (channels 1 to K, the background left out) averaged over the classes, so a small class
    weighs as much as a large one.

    Args:
        y_true: Class ids ``(B, H, W)`` or ``(B, H, W, 1)`` (0 background, 1..K), or one-hot
            ``(B, H, W, K + 1)``.
        y_pred: Softmax probabilities ``(B, H, W, K + 1)``, background first, ``K >= 1``.
        alpha: Weight of the CE term, in [0, 1]. Defaults to 0.5.
        epsilon: Smoothing term of the Dice loss (> 0). Defaults to 1e-6.

    Returns:
        Float32 tensor of shape ``(B,)``.
    """
    alpha = unit_interval("alpha", alpha)
    epsilon = finite_positive("epsilon", epsilon)
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    channels = y_pred.shape[-1]
    if len(y_pred.shape) != 4 or channels is None or channels < 2:
        raise ValueError(
            "`y_pred` must be softmax probabilities (B, H, W, K + 1) with K >= 1. "
            f"Received: shape {tuple(y_pred.shape)}"
        )
    y_true = class_one_hot(y_true, channels)
    clipped = ops.clip(y_pred, keras.config.epsilon(), 1.0)
    ce = _per_sample_mean(-ops.sum(y_true * ops.log(clipped), axis=-1))
    dice = ops.stack(
        [dice_loss(y_true[..., c], y_pred[..., c], epsilon) for c in range(1, channels)], axis=1
    )
    return alpha * ce + (1.0 - alpha) * ops.mean(dice, axis=1)


def weighted_binary_crossentropy(y_true: Any, y_pred: Any, positive_weight: float = 1.0) -> Any:
    """Binary cross-entropy with the positive (preterm) term scaled, one value per sample.

    ``-(positive_weight * y * log(p) + (1 - y) * log(1 - p))``, averaged over the non-batch
    axes, with ``p`` clipped to ``[keras.config.epsilon(), 1 - keras.config.epsilon()]``. With
    ``positive_weight=1`` it equals ``keras.losses.binary_crossentropy``.

    Args:
        y_true: Labels in [0, 1] (1 = preterm), shape ``(B, 1)`` or ``(B,)``.
        y_pred: Probabilities in [0, 1], same shape (a trailing axis of size 1 may differ).
        positive_weight: Factor on the positive term (> 0). Defaults to 1.0. See
            :func:`positive_weight_from_labels`.

    Returns:
        Float32 tensor of shape ``(B,)``.
    """
    positive_weight = finite_positive("positive_weight", positive_weight)
    y_true, y_pred = _prepare(y_true, y_pred)
    return _per_sample_mean(_binary_crossentropy(y_true, y_pred, positive_weight))


def positive_weight_from_labels(labels: Any) -> float:
    """The ``positive_weight`` that balances a label set: ``n_negative / n_positive``.

    Args:
        labels: Array-like of 0/1 labels (1 = preterm), any shape. NaN and None (unknown
            outcome) are ignored.

    Returns:
        ``n_negative / n_positive`` as a Python float (1.0 for a balanced set).

    Raises:
        ValueError: If a known label is neither 0 nor 1, or there is no positive or no
            negative label.
    """
    values = np.asarray(labels, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    bad = values[(values != 0.0) & (values != 1.0)]
    if bad.size:
        raise ValueError(
            f"`labels` must hold 0, 1 or NaN (unknown). Received: labels with value {bad[0]:g}"
        )
    n_positive = int(np.count_nonzero(values == 1.0))
    n_negative = int(values.size - n_positive)
    if n_positive == 0 or n_negative == 0:
        raise ValueError(
            "`labels` must contain both classes to derive a positive weight. "
            f"Received: labels with n_positive={n_positive}, n_negative={n_negative}"
        )
    return n_negative / n_positive


# Loss classes


@keras.saving.register_keras_serializable(package="cervixnet")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss (squared form) of :func:`dice_loss`; one value per image, then reduced.

    Args:
        epsilon: Smoothing term (> 0). Defaults to 1e-6.
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Defaults to ``"dice_loss"``.
        dtype: Dtype of the reduction. Defaults to None (``keras.config.floatx()``).
    """

    def __init__(
        self,
        epsilon: float = 1e-6,
        reduction: str | None = "sum_over_batch_size",
        name: str = "dice_loss",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.epsilon = finite_positive("epsilon", epsilon)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return dice_loss(y_true, y_pred, epsilon=self.epsilon)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "dtype": self.dtype})
        return config


class _CompoundLoss(keras.losses.Loss):
    """``alpha`` times a cross-entropy plus ``1 - alpha`` times a Dice loss: the arguments and
    config shared by :class:`BCEDiceLoss` and :class:`CEDiceLoss`, which say which."""

    default_name = "compound_loss"

    def __init__(
        self,
        alpha: float = 0.5,
        epsilon: float = 1e-6,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)
        self.alpha = unit_interval("alpha", alpha)
        self.epsilon = finite_positive("epsilon", epsilon)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"alpha": self.alpha, "epsilon": self.epsilon, "dtype": self.dtype})
        return config


@keras.saving.register_keras_serializable(package="cervixnet")
class BCEDiceLoss(_CompoundLoss):
    """``alpha * BCE + (1 - alpha) * Dice`` of :func:`bce_dice_loss`, the paper's mask loss.

    Args:
        alpha: Weight of the BCE term, in [0, 1]. Defaults to 0.5.
        epsilon: Smoothing term of the Dice loss (> 0). Defaults to 1e-6.
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Defaults to ``"bce_dice_loss"``.
        dtype: Dtype of the reduction. Defaults to None (``keras.config.floatx()``).
    """

    default_name = "bce_dice_loss"

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return bce_dice_loss(y_true, y_pred, alpha=self.alpha, epsilon=self.epsilon)


@keras.saving.register_keras_serializable(package="cervixnet")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """BCE with the positive (preterm) term scaled, of :func:`weighted_binary_crossentropy`.

    Args:
        positive_weight: Factor on the positive term (> 0). Defaults to 1.0 (plain BCE).
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Defaults to ``"weighted_binary_crossentropy"``.
        dtype: Dtype of the reduction. Defaults to None (``keras.config.floatx()``).
    """

    def __init__(
        self,
        positive_weight: float = 1.0,
        reduction: str | None = "sum_over_batch_size",
        name: str = "weighted_binary_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.positive_weight = finite_positive("positive_weight", positive_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return weighted_binary_crossentropy(y_true, y_pred, positive_weight=self.positive_weight)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"positive_weight": self.positive_weight, "dtype": self.dtype})
        return config


@keras.saving.register_keras_serializable(package="cervixnet")
class CEDiceLoss(_CompoundLoss):
    """``alpha * CE + (1 - alpha) * mean class Dice`` of :func:`ce_dice_loss`, the mask loss
    of a model with several classes (a softmax over ``K + 1`` channels).

    Args:
        alpha: Weight of the CE term, in [0, 1]. Defaults to 0.5.
        epsilon: Smoothing term of the Dice loss (> 0). Defaults to 1e-6.
        reduction: Keras reduction. Defaults to ``"sum_over_batch_size"``.
        name: Defaults to ``"ce_dice_loss"``.
        dtype: Dtype of the reduction. Defaults to None (``keras.config.floatx()``).
    """

    default_name = "ce_dice_loss"

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return ce_dice_loss(y_true, y_pred, alpha=self.alpha, epsilon=self.epsilon)
