"""Floating-point work of a Keras model, counted from its layers, and how wide its convolutions are.

The count covers the layers that dominate a convolutional network: ``Conv2D``,
``Conv2DTranspose`` and ``Dense``, at 2 FLOPs per multiply-add. Normalisation, activations,
pooling and the loss are left out (a few percent for a U-Net). One training step costs about
three forward passes (the backward pass computes gradients for both activations and weights),
the usual approximation for throughput accounting. Layers of nested models are counted too;
the model must be built (every layer has a known input shape).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import keras


def _layer_flops(model: keras.Model) -> Iterator[tuple[keras.layers.Layer, int, int]]:
    """``(layer, forward FLOPs per image, input channels)`` of each counted layer."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layer_flops(layer)
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            # Every input pixel scatters a kernel_h x kernel_w x filters patch.
            _, height, width, in_channels = layer.input.shape
            kh, kw = layer.kernel_size
            yield layer, 2 * height * width * kh * kw * in_channels * layer.filters, in_channels
        elif isinstance(layer, keras.layers.Conv2D):
            in_channels = layer.input.shape[-1]
            _, height, width, out_channels = layer.output.shape
            kh, kw = layer.kernel_size
            flops = 2 * height * width * kh * kw * in_channels * out_channels // layer.groups
            yield layer, flops, in_channels
        elif isinstance(layer, keras.layers.Dense):
            positions = math.prod(layer.input.shape[1:-1])  # 1 for (batch, features)
            in_channels = layer.input.shape[-1]
            yield layer, 2 * positions * in_channels * layer.units, in_channels


def forward_flops_per_image(model: keras.Model) -> int:
    """FLOPs of one forward pass of one image through ``model``'s conv and dense layers."""
    return int(sum(flops for _, flops, _ in _layer_flops(model)))


def training_flops_per_image(model: keras.Model) -> int:
    """About three forward passes: forward, gradient with respect to activations and weights."""
    return 3 * forward_flops_per_image(model)


def median_convolution_width(model: keras.Model) -> int:
    """The input channels of a typical convolution, weighted by FLOPs.

    The convolutions (plain and transposed) are ordered by their number of input channels;
    the result is the width at which half of their FLOPs have been counted. Half of the
    convolution work is therefore done at this width or wider: 32 for the default joint U-Net
    (8 base filters), 256 for the paper's (64), whatever the image size. 0 for a model with no
    convolution.
    """
    widths = sorted(
        (in_channels, flops)
        for layer, flops, in_channels in _layer_flops(model)
        if isinstance(layer, keras.layers.Conv2D)
    )
    total = sum(flops for _, flops in widths)
    counted = 0
    for in_channels, flops in widths:
        counted += flops
        if 2 * counted >= total and total:
            return int(in_channels)
    return 0
