"""DeepLabv3 (Chen et al., 2017) with a ResNet bottleneck backbone, for binary segmentation."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
from keras import layers

from cervixnet.models import _validation as v
from cervixnet.models.blocks import conv_bn_relu, mask_activation, mask_channels

# Output stride of the backbone: stem conv /2, stem pool /2, stages 2 and 3 /2 each; stage 4
# keeps the resolution and uses atrous rate 2 instead of its stride.
_OUTPUT_STRIDE = 16


def _bottleneck_block(
    x: keras.KerasTensor, width: int, prefix: str, strides: int, dilation_rate: int
) -> keras.KerasTensor:
    """ResNet bottleneck: 1x1 (width) -> 3x3 (width, strided/atrous) -> 1x1 (4 * width), + skip.

    The stride sits on the 3x3 convolution (ResNet v1.5). The shortcut is a 1x1 Conv-BN
    projection when the shape changes, else the identity. Layers are named
    ``{prefix}_conv1`` ... ``{prefix}_bn3``, ``{prefix}_shortcut_conv``, ``{prefix}_add``,
    ``{prefix}_out``.
    """
    out_filters = 4 * width
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = conv_bn_relu(
            x, out_filters, f"{prefix}_shortcut", kernel_size=1, strides=strides, activation=False
        )
    x = conv_bn_relu(x, width, prefix, 1, kernel_size=1)
    x = conv_bn_relu(
        x, width, prefix, 2, kernel_size=3, strides=strides, dilation_rate=dilation_rate
    )
    x = conv_bn_relu(x, out_filters, prefix, 3, kernel_size=1, activation=False)
    x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    return layers.ReLU(name=f"{prefix}_out")(x)


def build_deeplabv3(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 64,
    blocks_per_stage: Sequence[int] = (3, 4, 6, 3),
    aspp_filters: int | None = None,
    aspp_rates: Sequence[int] = (6, 12, 18),
    weights: str | os.PathLike | None = None,
    name: str = "deeplabv3",
    classes: int = 1,
) -> keras.Model:
    """Build a DeepLabv3 (output stride 16) that outputs a one-channel sigmoid mask (or a
    softmax over classes).

    Backbone (ResNet-50 at the defaults): a 7x7 stride-2 Conv-BN-ReLU stem with
    ``base_filters`` filters and a 3x3 stride-2 max-pool, then four stages of bottleneck
    residual blocks (``blocks_per_stage``) of width ``base_filters * (1, 2, 4, 8)`` and output
    ``4 *`` that; stages 2 and 3 downsample by 2, stage 4 keeps the resolution and uses atrous
    rate 2 instead (output stride 16). ASPP: a 1x1 branch, one 3x3 atrous branch per rate in
    ``aspp_rates`` and an image-pooling branch (global average pool, 1x1 conv, bilinear
    upsample back), each ``aspp_filters`` wide with BN and ReLU; concatenated and projected by a
    1x1 Conv-BN-ReLU. A 1x1 convolution gives one logit channel, bilinear upsampling by 16
    restores the input size, and a sigmoid gives the mask.

    The image-pooling branch applies batch norm to a 1x1 map, so train with batches of 2 or more.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be divisible by 16
            (the output stride). Any channel count.
        base_filters: stem filters and first-stage bottleneck width (64 in ResNet-50).
        blocks_per_stage: bottleneck blocks in each of the 4 stages; ``(3, 4, 6, 3)`` is
            ResNet-50, ``(3, 4, 23, 3)`` ResNet-101.
        aspp_filters: width of the ASPP branches and projection; ``None`` means
            ``4 * base_filters`` (256 at the paper width).
        aspp_rates: atrous rates of the 3x3 ASPP branches; ``(6, 12, 18)`` is DeepLabv3's
            setting for output stride 16 (chosen for ~513-pixel crops; at 256 x 256 the
            16 x 16 feature map makes rates >= 16 see mostly padding).
        weights: path of a local weights file to load; ``None`` for random initialisation.
        name: model name.

        classes: foreground classes ``K``. 1 (default): one sigmoid channel, the binary
            mask. ``K > 1``: a softmax over ``K + 1`` channels, background first.

    Returns:
        A ``keras.Model`` mapping ``(batch, H, W, C)`` to ``mask`` of shape ``(batch, H, W, 1)``
        (or ``(batch, H, W, classes + 1)``) with values in ``[0, 1]`` (float32 even under
        mixed precision).
    """
    shape = v.check_input_shape(
        input_shape, _OUTPUT_STRIDE, f"DeepLabv3 at output stride {_OUTPUT_STRIDE}"
    )
    base = v.check_positive_int(base_filters, "base_filters")
    blocks = v.check_positive_ints(blocks_per_stage, "blocks_per_stage", length=4)
    aspp_width = (
        4 * base if aspp_filters is None else v.check_positive_int(aspp_filters, "aspp_filters")
    )
    rates = v.check_positive_ints(aspp_rates, "aspp_rates")
    if len(set(rates)) != len(rates):
        raise ValueError(
            f"`aspp_rates` must be distinct positive ints. Received: aspp_rates={aspp_rates!r}"
        )
    weights_path = v.check_weights(weights)
    name = v.check_name(name)
    classes = v.check_classes(classes)

    # Backbone: stem.
    inputs = keras.Input(shape=shape, name="image")
    x = conv_bn_relu(inputs, base, "stem", kernel_size=7, strides=2)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    # Backbone: residual stages (stride 1, 2, 2, then atrous rate 2 in place of stride 2).
    stage_strides = (1, 2, 2, 1)
    stage_dilations = (1, 1, 1, 2)
    for stage, (count, stride, dilation) in enumerate(
        zip(blocks, stage_strides, stage_dilations, strict=True), start=1
    ):
        width = base * 2 ** (stage - 1)
        for block in range(1, count + 1):
            x = _bottleneck_block(
                x,
                width,
                f"stage{stage}_block{block}",
                strides=stride if block == 1 else 1,
                dilation_rate=dilation,
            )

    # ASPP.
    feature_height, feature_width = shape[0] // _OUTPUT_STRIDE, shape[1] // _OUTPUT_STRIDE
    branches = [conv_bn_relu(x, aspp_width, "aspp_1x1", kernel_size=1)]
    for rate in rates:
        branches.append(conv_bn_relu(x, aspp_width, f"aspp_rate{rate}", dilation_rate=rate))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool_gap")(x)
    pooled = conv_bn_relu(pooled, aspp_width, "aspp_pool", kernel_size=1)
    pooled = layers.UpSampling2D(
        (feature_height, feature_width), interpolation="bilinear", name="aspp_pool_upsample"
    )(pooled)
    branches.append(pooled)
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, aspp_width, "aspp_project", kernel_size=1)

    # Head: 1x1 classifier to one logit channel, bilinear upsampling to the input size.
    x = layers.Conv2D(mask_channels(classes), 1, name="deeplab_classifier")(x)
    logits = layers.UpSampling2D(_OUTPUT_STRIDE, interpolation="bilinear", name="deeplab_upsample")(
        x
    )
    mask = mask_activation(logits, classes)

    model = keras.Model(inputs, mask, name=name)
    v.load_weights(model, weights_path)
    return model
