"""Batch normalisation computed by TensorFlow's fused kernel where it can be.

Keras 3's ``BatchNormalization`` computes the batch moments and the normalisation with
separate element-wise operations, in float32 even under a 16-bit policy (it casts its input
up and its output back). On the TensorFlow CPU path that is a large share of a Conv-BN-ReLU
network's training step. With TensorFlow's fused kernel (``FusedBatchNormV3``: one oneDNN
primitive forward and one backward, bfloat16 in and out with float32 statistics)
``cervixnet train`` on the paper-size joint model ran 1.15 x as fast in ``mixed_bfloat16``
and about 1.04 x in float32 on a 2-core AVX-512 BF16 CPU (docs/performance.md). In bfloat16
the fused kernel is fast only for a multiple of 16 channels (oneDNN's blocked layout): with 8
channels a Conv-BN-ReLU step ran 1.2 x slower than with Keras' layer, so those keep Keras'
layer. In inference the layer multiplies by the folded statistics instead (``call``).
"""

from __future__ import annotations

import keras

_FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable(package="cervixnet")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with TensorFlow's fused kernel on the TF backend.

    Same arguments, weights, weight names and results (to float round-off) as Keras' layer:
    in training the batch is normalised by its own mean and biased variance and the moving
    statistics move by ``momentum``; in inference the moving statistics are used. The fused
    kernel runs in training when the backend is TensorFlow and the input is a 4-D tensor
    normalised over its channels (``axis=-1`` for ``(batch, H, W, C)``, ``axis=1`` for
    ``(batch, C, H, W)``) in float32, or in bfloat16 or float16 with a multiple of 16
    channels, with no mask, renormalisation or cross-replica synchronisation; in inference
    such an input is normalised by one float32 multiply-add per element,
    ``x * scale + offset`` with ``scale = gamma / sqrt(moving_variance + epsilon)`` and
    ``offset = beta - moving_mean * scale``. Anything else (and every other backend) runs
    Keras' own computation, so a model built with it works everywhere.
    """

    def _fusable(self, inputs, mask) -> bool:
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 1, 3)
            and dtype in _FUSED_DTYPES
            # 16 bits: oneDNN's fused kernel is fast only on blocks of 16 channels.
            and (dtype == "float32" or (inputs.shape[1 if self.axis == 1 else -1] or 1) % 16 == 0)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        layout = "NCHW" if self.axis == 1 else "NHWC"
        channels = inputs.shape[1 if layout == "NCHW" else -1]
        gamma = self.gamma if self.scale else tf.ones((channels,), "float32")
        beta = self.beta if self.center else tf.zeros((channels,), "float32")
        gamma, beta = tf.cast(gamma, "float32"), tf.cast(beta, "float32")
        if training and self.trainable:
            outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True, data_format=layout
            )
            # The kernel returns the variance with Bessel's correction n / (n - 1); Keras'
            # moving variance follows the biased variance of the batch.
            count = tf.cast(tf.size(inputs) // channels, "float32")
            variance = unbiased_variance * (tf.maximum(count - 1.0, 1.0) / count)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
            return outputs
        # Inference: one multiply-add per element with the folded statistics, in float32.
        # The fused kernel's inference form is not used: TensorFlow's remapper fuses it into
        # the convolution before it, and oneDNN runs that fusion (batch norm as binary
        # post-ops) with a gemm-based convolution at batch 1, 8 x slower than this. At batch
        # 32 the fusion was 1.3 x faster (docs/performance.md).
        scale = gamma * tf.math.rsqrt(tf.cast(self.moving_variance, "float32") + self.epsilon)
        offset = beta - tf.cast(self.moving_mean, "float32") * scale
        if layout == "NCHW":
            scale, offset = tf.reshape(scale, (-1, 1, 1)), tf.reshape(offset, (-1, 1, 1))
        outputs = tf.cast(inputs, "float32") * scale + offset
        return tf.cast(outputs, inputs.dtype)
