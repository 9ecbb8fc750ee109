"""U-Net with a parallel classification branch: the cervixnet joint model.

The classification branch (global pooling, dense layers, ``label``) computes in float32 under
any dtype policy; under ``mixed_bfloat16`` only the U-Net computes in 16 bits. The branch
costs a few thousand FLOPs per image, so nothing is lost. In one paired run of the joint
U-Net at 32 base filters on the synthetic set (seed 0), the branch in bfloat16 had every
hidden ReLU silent from the sixth epoch on (label loss fixed at ln 2, AUC 0.5), while the same
run with the branch in float32 kept learning, as the float32 run did. At seed 1 the branch
went silent in float32 and in ``mixed_bfloat16`` alike, so at that width it can die in any
precision (docs/performance.md#does-bfloat16-cost-accuracy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
from keras import layers

from cervixnet.models import _validation as v
from cervixnet.models.stop_gradient import StopGradient
from cervixnet.models.unet import unet_graph, validate_unet_args

_POOLINGS = ("avg", "max", "avgmax")


def _check_classifier_features(value: object, depth: int) -> tuple[str, ...]:
    """Check ``classifier_features``: one name or a sequence of distinct names."""
    valid = (
        "bottleneck",
        *(f"encoder{i}" for i in range(1, depth + 1)),
        *(f"decoder{i}" for i in range(1, depth + 1)),
    )
    names = (value,) if isinstance(value, str) else value
    if (
        not isinstance(names, Sequence)
        or not names
        or not all(isinstance(n, str) and n in valid for n in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            "`classifier_features` must be a feature map name or a non-empty sequence of distinct "
            f"names among: {', '.join(valid)} (for depth={depth}). "
            f"Received: classifier_features={value!r}"
        )
    return tuple(names)


def build_unet_joint(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 64,
    depth: int = 4,
    batch_norm: bool = True,
    dropout: float = 0.0,
    classifier_features: str | Sequence[str] = "bottleneck",
    classifier_pooling: str = "avg",
    classifier_units: Sequence[int] = (256, 64),
    classifier_dropout: float = 0.5,
    classifier_trains_encoder: bool = True,
    weights: str | os.PathLike | None = None,
    name: str = "unet_joint",
    classes: int = 1,
) -> keras.Model:
    """Build the joint model: a U-Net whose encoder also feeds a preterm-birth classifier.

    The segmentation path is exactly :func:`cervixnet.models.build_unet` (same layers, same
    names). Each feature map named in ``classifier_features`` is globally pooled, the pooled
    vectors are concatenated and passed through ``Dense + ReLU`` layers (``classifier_units``)
    each followed by dropout, ending in ``Dense(1, activation="sigmoid", name="label")``.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be divisible by
            ``2**depth`` (16 for the default depth 4). Any channel count.
        base_filters, depth, batch_norm, dropout: as in :func:`build_unet`.
        classifier_features: ``"bottleneck"`` (default) and/or ``"encoder1"`` ...
            ``"encoder{depth}"`` (level outputs before pooling) and/or ``"decoder1"`` ...
            ``"decoder{depth}"`` (level outputs after their convolutions; ``decoder1`` is at
            full resolution, just before the mask); a string or a sequence.
        classifier_pooling: global pooling per feature map: ``"avg"`` (default), ``"max"``, or
            ``"avgmax"`` (both, concatenated).
        classifier_units: widths of the hidden dense layers, default ``(256, 64)``; may be empty.
        classifier_dropout: dropout rate in ``[0, 1)`` after each hidden dense layer (default
            0.5); 0 adds no dropout layer.
        classifier_trains_encoder: if True (default, as in the paper) the label loss also
            trains the encoder; if False a ``StopGradient`` layer per feature map keeps the
            encoder to segmentation, and the branch learns on its features only (less
            overfitting when preterm cases are few).
        weights: path of a local weights file to load; ``None`` for random initialisation.
        name: model name.
        classes: foreground classes of the mask, as in :func:`build_unet` (default 1: one
            sigmoid channel; ``K > 1``: a softmax over ``K + 1`` channels).

    Returns:
        A ``keras.Model`` with named outputs ``{"mask": ..., "label": ...}``: ``mask`` of shape
        ``(batch, H, W, 1)`` and ``label`` (preterm probability) of shape ``(batch, 1)``, both
        sigmoid, float32. ``predict`` returns that dict; losses, metrics and targets are keyed
        by the same names.
    """
    args = validate_unet_args(input_shape, base_filters, depth, batch_norm, dropout, classes)
    features_used = _check_classifier_features(classifier_features, args.depth)
    pooling = v.check_choice(classifier_pooling, _POOLINGS, "classifier_pooling")
    units = v.check_positive_ints(classifier_units, "classifier_units")
    head_dropout = v.check_rate(classifier_dropout, "classifier_dropout")
    if not isinstance(classifier_trains_encoder, bool):
        raise ValueError(
            "`classifier_trains_encoder` must be True or False. "
            f"Received: classifier_trains_encoder={classifier_trains_encoder!r}"
        )
    weights_path = v.check_weights(weights)
    name = v.check_name(name)

    # Segmentation path.
    inputs = keras.Input(shape=args.input_shape, name="image")
    mask, features = unet_graph(inputs, args)

    # Classification branch: pool each chosen feature map, concatenate, dense layers; in
    # float32 under any dtype policy (see the module docstring).
    pooled = []
    for feature in features_used:
        prefix = f"label_head_{feature}"
        source = features[feature]
        if not classifier_trains_encoder:
            source = StopGradient(name=f"{prefix}_stop_gradient", dtype="float32")(source)
        if pooling in ("avg", "avgmax"):
            pooled.append(
                layers.GlobalAveragePooling2D(name=f"{prefix}_avgpool", dtype="float32")(source)
            )
        if pooling in ("max", "avgmax"):
            pooled.append(
                layers.GlobalMaxPooling2D(name=f"{prefix}_maxpool", dtype="float32")(source)
            )
    x = (
        pooled[0]
        if len(pooled) == 1
        else layers.Concatenate(name="label_head_concat", dtype="float32")(pooled)
    )
    for index, width in enumerate(units, start=1):
        x = layers.Dense(
            width,
            activation="relu",
            kernel_initializer="he_normal",
            dtype="float32",
            name=f"label_head_dense{index}",
        )(x)
        if head_dropout > 0:
            x = layers.Dropout(head_dropout, dtype="float32", name=f"label_head_dropout{index}")(x)
    label = layers.Dense(1, activation="sigmoid", dtype="float32", name="label")(x)

    model = keras.Model(inputs, {"mask": mask, "label": label}, name=name)
    v.load_weights(model, weights_path)
    return model
