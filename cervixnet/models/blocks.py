"""Named building blocks shared by the model builders.

Every layer these helpers create gets an explicit name derived from a ``prefix`` the caller
passes, so a builder's layer names read like a table of contents (``encoder1_conv1``,
``encoder1_bn1``, ``encoder1_relu1``). Grad-CAM, transfer learning and debugging all look layers
up by these names.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from cervixnet.models.batch_norm import FusedBatchNormalization

# oneDNN's bfloat16 convolutions and batch norms work on blocks of 16 channels. Narrower
# layers ran slower in bfloat16 than in float32 on a 2-core AVX-512 BF16 CPU; with them in
# float32 the default-width joint U-Net trained 1.03 x (bare fit) to 1.12 x (cervixnet
# train's path) as fast in mixed_bfloat16 as with every layer in bfloat16
# (docs/performance.md#bfloat16-by-width).
BFLOAT16_MIN_CHANNELS = 16


def layer_dtype(channels: int) -> str | None:
    """The dtype for a layer of ``channels`` output channels, under the global dtype policy.

    ``"float32"`` where the policy computes in bfloat16 (``mixed_bfloat16``) and ``channels``
    is below ``BFLOAT16_MIN_CHANNELS`` (16); otherwise ``None``: the policy's. Under float32 or
    ``mixed_float16`` every layer keeps the policy. The weights are float32 either way.
    """
    narrow = channels < BFLOAT16_MIN_CHANNELS
    return "float32" if narrow and keras.config.dtype_policy().compute_dtype == "bfloat16" else None


def conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    prefix: str,
    index: int | str = "",
    kernel_size: int = 3,
    strides: int = 1,
    dilation_rate: int = 1,
    batch_norm: bool = True,
    activation: bool = True,
) -> keras.KerasTensor:
    """Conv2D (``same`` padding) -> optional BatchNorm -> optional ReLU.

    Layers are named ``{prefix}_conv{index}``, ``{prefix}_bn{index}`` and ``{prefix}_relu{index}``.
    With batch norm the convolution has no bias (the norm's beta replaces it). Kernels use He
    normal initialisation, suited to ReLU networks.

    Args:
        x: input tensor, shape ``(batch, H, W, C)``.
        filters: output channels.
        prefix: name prefix, e.g. ``"encoder1"``.
        index: suffix after ``conv``/``bn``/``relu``, e.g. ``1`` -> ``encoder1_conv1``.
        kernel_size: square kernel size.
        strides: convolution stride.
        dilation_rate: atrous rate (1 = ordinary convolution).
        batch_norm: add a batch norm after the convolution (``FusedBatchNormalization``:
            Keras' ``BatchNormalization``, computed by TensorFlow's fused kernel there).
        activation: add a ``ReLU`` at the end.

    Returns:
        Tensor of shape ``(batch, H / strides, W / strides, filters)``. Under
        ``mixed_bfloat16`` the three layers compute in float32 when ``filters`` is below 16
        (:func:`layer_dtype`).
    """
    dtype = layer_dtype(filters)
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        dtype=dtype,
        name=f"{prefix}_conv{index}",
    )(x)
    if batch_norm:
        x = FusedBatchNormalization(dtype=dtype, name=f"{prefix}_bn{index}")(x)
    if activation:
        x = layers.ReLU(dtype=dtype, name=f"{prefix}_relu{index}")(x)
    return x


def mask_channels(classes: int) -> int:
    """Channels of the mask output: 1 for one class (a sigmoid), ``classes + 1`` for several
    (a softmax with the background first)."""
    return 1 if classes == 1 else classes + 1


def mask_activation(logits: keras.KerasTensor, classes: int = 1) -> keras.KerasTensor:
    """The segmentation output named ``mask``, in float32: a sigmoid for one class, a softmax
    over the channels (background and ``classes``) for several.

    The float32 dtype keeps the output float32 under a mixed-precision policy. The activation
    lives in its own named layer so that explanation tools can swap it for a linear one.
    """
    activation = "sigmoid" if classes == 1 else "softmax"
    return layers.Activation(activation, dtype="float32", name="mask")(logits)


@keras.saving.register_keras_serializable(package="cervixnet")
class BilinearUpsampling(keras.initializers.Initializer):
    """Initialise a ``Conv2DTranspose`` kernel to bilinear interpolation (as in FCN).

    For a kernel of size ``2 * s`` used with stride ``s`` and ``same`` padding, the layer starts
    out as exact bilinear upsampling by ``s``; it can then be learned. Channel ``i`` of the output
    is interpolated from channel ``i`` of the input (no cross-channel mixing); when the input and
    output channel counts differ, only the first ``min(in, out)`` channels get a filter.

    The kernel shape is ``(height, width, out_channels, in_channels)`` as Keras'
    ``Conv2DTranspose`` expects; height and width must be equal.
    """

    def __call__(self, shape: tuple[int, ...], dtype: str | None = None) -> object:
        """Return the bilinear kernel as a backend tensor."""
        if len(shape) != 4 or shape[0] != shape[1]:
            raise ValueError(
                "`BilinearUpsampling` needs a square 4D Conv2DTranspose kernel shape "
                f"(size, size, out_channels, in_channels). Received: shape={tuple(shape)!r}"
            )
        size, _, out_channels, in_channels = shape
        factor = (size + 1) // 2
        center = factor - 1 if size % 2 == 1 else factor - 0.5
        grid = np.arange(size, dtype="float64")
        profile = 1.0 - np.abs(grid - center) / factor
        filt = np.outer(profile, profile)
        kernel = np.zeros(shape, dtype="float64")
        for channel in range(min(out_channels, in_channels)):
            kernel[:, :, channel, channel] = filt
        return ops.convert_to_tensor(kernel, dtype=dtype or keras.config.floatx())

    def get_config(self) -> dict:
        """No arguments: the kernel is determined by the shape."""
        return {}
