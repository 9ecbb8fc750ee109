"""FCN-8s (Long, Shelhamer and Darrell, 2015) with a VGG16 encoder, for binary segmentation."""

from __future__ import annotations

import os

import keras
from keras import layers

from cervixnet.models import _validation as v
from cervixnet.models.blocks import (
    BilinearUpsampling,
    conv_bn_relu,
    mask_activation,
    mask_channels,
)


def _bilinear_up(
    x: keras.KerasTensor, stride: int, name: str, channels: int = 1
) -> keras.KerasTensor:
    """Transposed convolution by ``stride`` (kernel ``2 * stride``) of ``channels`` channels,
    initialised to bilinear interpolation of each channel as in FCN-8s."""
    return layers.Conv2DTranspose(
        channels,
        2 * stride,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearUpsampling(),
        name=name,
    )(x)


def build_fcn(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    base_filters: int = 64,
    fc_filters: int | None = None,
    fc_kernel_size: int = 7,
    fc_dropout: float = 0.5,
    batch_norm: bool = False,
    weights: str | os.PathLike | None = None,
    name: str = "fcn",
    classes: int = 1,
) -> keras.Model:
    """Build an FCN-8s that outputs a one-channel sigmoid mask (or a softmax over classes).

    Encoder: the VGG16 convolutional layers, five blocks of 2, 2, 3, 3, 3 3x3 Conv-ReLU layers
    with ``base_filters * (1, 2, 4, 8, 8)`` filters, each block ending in a 2x2 max-pool (strides
    2 ... 32). ``fc6`` and ``fc7`` are the VGG fully connected layers as convolutions (``fc6``:
    ``fc_kernel_size`` x ``fc_kernel_size``, ``fc7``: 1x1, both ``fc_filters`` wide, ReLU and
    dropout). Decoder, as in FCN-8s: 1x1 score convolutions to one logit channel on ``fc7``,
    ``pool4`` and ``pool3``; the ``fc7`` score is upsampled 2x (transposed conv, kernel 4) and
    added to the ``pool4`` score, that sum is upsampled 2x and added to the ``pool3`` score, and
    the result is upsampled 8x (transposed conv, kernel 16) to the input size. The transposed
    convolutions start as bilinear interpolation and are learned; the skip score layers start at
    zero, as in the original.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be divisible by 32
            (five 2x poolings). Any channel count.
        base_filters: filters of the first VGG block (64 in VGG16).
        fc_filters: width of ``fc6`` and ``fc7``; ``None`` means ``64 * base_filters`` (4096 at
            the VGG16 width).
        fc_kernel_size: kernel size of ``fc6`` (7, VGG16's 7x7 receptive field on ``pool5``;
            ``same`` padding, so inputs smaller than 224 still work).
        fc_dropout: dropout rate in ``[0, 1)`` after ``fc6`` and ``fc7`` (0.5 as in FCN); 0
            adds no dropout layer.
        batch_norm: batch norm after every encoder and fc convolution. Default ``False``, the
            faithful FCN-8s/VGG16 (which has none); ``True`` helps when training from scratch.
        weights: path of a local weights file to load; ``None`` for random initialisation.
        name: model name.
        classes: foreground classes ``K``. 1 (default): one sigmoid channel, the binary
            mask. ``K > 1`` (e.g. anterior and posterior lip): a softmax over ``K + 1``
            channels, background first, channel ``k`` the probability of class ``k``.

    Returns:
        A ``keras.Model`` mapping ``(batch, H, W, C)`` to ``mask`` of shape ``(batch, H, W, 1)``
        (or ``(batch, H, W, classes + 1)``) with values in ``[0, 1]`` (float32 even under
        mixed precision).
    """
    shape = v.check_input_shape(input_shape, 32, "FCN-8s: five 2x poolings, 2**5 = 32")
    base = v.check_positive_int(base_filters, "base_filters")
    fc_width = 64 * base if fc_filters is None else v.check_positive_int(fc_filters, "fc_filters")
    fc_kernel = v.check_positive_int(fc_kernel_size, "fc_kernel_size")
    fc_rate = v.check_rate(fc_dropout, "fc_dropout")
    bn = v.check_bool(batch_norm, "batch_norm")
    classes = v.check_classes(classes)
    channels = mask_channels(classes)
    weights_path = v.check_weights(weights)
    name = v.check_name(name)

    # Encoder: VGG16 blocks (layer names as in keras.applications.VGG16, plus bn/relu).
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    pools = {}
    for block, (convs, multiplier) in enumerate(
        zip((2, 2, 3, 3, 3), (1, 2, 4, 8, 8), strict=True), start=1
    ):
        for index in range(1, convs + 1):
            x = conv_bn_relu(x, base * multiplier, f"block{block}", index, batch_norm=bn)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        pools[block] = x

    # fc6 and fc7 as convolutions.
    x = conv_bn_relu(x, fc_width, "fc6", kernel_size=fc_kernel, batch_norm=bn)
    if fc_rate > 0:
        x = layers.Dropout(fc_rate, name="fc6_dropout")(x)
    x = conv_bn_relu(x, fc_width, "fc7", kernel_size=1, batch_norm=bn)
    if fc_rate > 0:
        x = layers.Dropout(fc_rate, name="fc7_dropout")(x)

    # FCN-8s decoder: score, upsample 2x, fuse pool4; upsample 2x, fuse pool3; upsample 8x.
    score = layers.Conv2D(channels, 1, name="fcn_score_fc7")(x)
    score = _bilinear_up(score, 2, "fcn_up2_fc7", channels)
    score_pool4 = layers.Conv2D(channels, 1, kernel_initializer="zeros", name="fcn_score_pool4")(
        pools[4]
    )
    score = layers.Add(name="fcn_fuse_pool4")([score, score_pool4])
    score = _bilinear_up(score, 2, "fcn_up2_pool4", channels)
    score_pool3 = layers.Conv2D(channels, 1, kernel_initializer="zeros", name="fcn_score_pool3")(
        pools[3]
    )
    score = layers.Add(name="fcn_fuse_pool3")([score, score_pool3])
    logits = _bilinear_up(score, 8, "fcn_up8", channels)
    mask = mask_activation(logits, classes)

    model = keras.Model(inputs, mask, name=name)
    v.load_weights(model, weights_path)
    return model
