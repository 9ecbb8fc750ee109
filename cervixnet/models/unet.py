"""U-Net (Ronneberger et al., 2015) for binary segmentation, with batch norm by default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from cervixnet.models import _validation as v
from cervixnet.models.blocks import conv_bn_relu, layer_dtype, mask_channels


@dataclass(frozen=True)
class UNetArgs:
    """Validated U-Net arguments (shared by ``build_unet`` and ``build_unet_joint``)."""

    input_shape: tuple[int, int, int]
    base_filters: int
    depth: int
    batch_norm: bool
    dropout: float
    classes: int = 1


def validate_unet_args(
    input_shape: object,
    base_filters: object,
    depth: object,
    batch_norm: object,
    dropout: object,
    classes: object = 1,
) -> UNetArgs:
    """Check the U-Net arguments; height and width must be divisible by ``2**depth``."""
    depth = v.check_positive_int(depth, "depth")
    shape = v.check_input_shape(
        input_shape, 2**depth, f"U-Net: 2**depth = {2**depth} for depth={depth}"
    )
    return UNetArgs(
        input_shape=shape,
        base_filters=v.check_positive_int(base_filters, "base_filters"),
        depth=depth,
        batch_norm=v.check_bool(batch_norm, "batch_norm"),
        dropout=v.check_rate(dropout, "dropout"),
        classes=v.check_classes(classes),
    )


def unet_graph(
    inputs: keras.KerasTensor, args: UNetArgs
) -> tuple[keras.KerasTensor, dict[str, keras.KerasTensor]]:
    """Build the U-Net graph on ``inputs``.

    Under ``mixed_bfloat16`` the layers of a level narrower than 16 channels compute in
    float32 (``blocks.layer_dtype``), its pooling, up-sampling and concatenation included.

    Returns:
        ``(mask, features)``: the mask ``(batch, H, W, 1)`` (sigmoid), or ``(batch, H, W,
        classes + 1)`` (softmax) with several classes, and the feature maps by
        name: ``"encoder{i}"`` (level ``i`` output before pooling, ``(H / 2**(i-1), ...,
        base_filters * 2**(i-1))``), ``"bottleneck"`` (``(H / 2**depth, ...,
        base_filters * 2**depth)``) and ``"decoder{i}"`` (level ``i`` output after its
        convolutions, the same shape as ``"encoder{i}"``).
    """
    base, depth, bn = args.base_filters, args.depth, args.batch_norm
    features: dict[str, keras.KerasTensor] = {}

    # Encoder: two conv blocks per level, then 2x2 max-pooling.
    x = inputs
    for level in range(1, depth + 1):
        prefix = f"encoder{level}"
        filters = base * 2 ** (level - 1)
        x = conv_bn_relu(x, filters, prefix, 1, batch_norm=bn)
        x = conv_bn_relu(x, filters, prefix, 2, batch_norm=bn)
        if level == depth and args.dropout > 0:
            # End of the contracting path, as in the original U-Net.
            x = layers.Dropout(args.dropout, name=f"{prefix}_dropout")(x)
        features[prefix] = x
        x = layers.MaxPooling2D(2, dtype=layer_dtype(filters), name=f"{prefix}_pool")(x)

    # Bottleneck.
    x = conv_bn_relu(x, base * 2**depth, "bottleneck", 1, batch_norm=bn)
    x = conv_bn_relu(x, base * 2**depth, "bottleneck", 2, batch_norm=bn)
    if args.dropout > 0:
        x = layers.Dropout(args.dropout, name="bottleneck_dropout")(x)
    features["bottleneck"] = x

    # Decoder: 2x2 transposed conv up, concatenate the skip, two conv blocks.
    for level in range(depth, 0, -1):
        prefix = f"decoder{level}"
        filters = base * 2 ** (level - 1)
        dtype = layer_dtype(filters)
        x = layers.Conv2DTranspose(
            filters,
            2,
            strides=2,
            padding="same",
            kernel_initializer="he_normal",
            dtype=dtype,
            name=f"{prefix}_up",
        )(x)
        x = layers.Concatenate(dtype=dtype, name=f"{prefix}_concat")(
            [x, features[f"encoder{level}"]]
        )
        x = conv_bn_relu(x, filters, prefix, 1, batch_norm=bn)
        x = conv_bn_relu(x, filters, prefix, 2, batch_norm=bn)
        features[prefix] = x

    activation = "sigmoid" if args.classes == 1 else "softmax"
    mask = layers.Conv2D(
        mask_channels(args.classes), 1, activation=activation, dtype="float32", name="mask"
    )(x)
    return mask, features


def build_unet(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 64,
    depth: int = 4,
    batch_norm: bool = True,
    dropout: float = 0.0,
    weights: str | os.PathLike | None = None,
    name: str = "unet",
    classes: int = 1,
) -> keras.Model:
    """Build a U-Net that outputs a one-channel sigmoid mask.

    Each of the ``depth`` encoder levels has two 3x3 Conv-BN-ReLU blocks and a 2x2 max-pool;
    filters start at ``base_filters`` and double per level to ``base_filters * 2**depth`` in the
    bottleneck. Each decoder level upsamples with a 2x2 stride-2 transposed convolution,
    concatenates the encoder skip and applies two Conv-BN-ReLU blocks. A 1x1 convolution with a
    sigmoid gives the mask.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be divisible by
            ``2**depth`` (16 for the default depth 4). Any channel count.
        base_filters: filters of the first level (64 in the original U-Net).
        depth: number of pooling steps (4 in the original U-Net).
        batch_norm: batch norm after every 3x3 convolution (convolutions then have no bias).
        dropout: dropout rate in ``[0, 1)`` at the end of the contracting path and of the
            bottleneck; 0 disables it (no layer is added).
        weights: path of a local weights file (``.weights.h5``, ``.weights.json`` or ``.keras``)
            to load; ``None`` for random initialisation. Nothing is downloaded.
        name: model name.
        classes: foreground classes ``K``. 1 (default): one sigmoid channel, the binary
            mask. ``K > 1`` (e.g. anterior and posterior lip): a softmax over ``K + 1``
            channels, background first, channel ``k`` the probability of class ``k``.

    Returns:
        A ``keras.Model`` mapping ``(batch, H, W, C)`` to ``mask`` of shape ``(batch, H, W, 1)``
        (or ``(batch, H, W, classes + 1)``) with values in ``[0, 1]`` (float32 even under
        mixed precision).
    """
    args = validate_unet_args(input_shape, base_filters, depth, batch_norm, dropout, classes)
    weights_path: Path | None = v.check_weights(weights)
    name = v.check_name(name)

    inputs = keras.Input(shape=args.input_shape, name="image")
    mask, _ = unet_graph(inputs, args)
    model = keras.Model(inputs, mask, name=name)
    v.load_weights(model, weights_path)
    return model
