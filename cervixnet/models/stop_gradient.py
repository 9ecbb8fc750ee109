"""A layer that passes its input forward and blocks the gradient backward."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="cervixnet")
class StopGradient(keras.layers.Layer):
    """Identity in the forward pass, zero gradient in the backward pass.

    The joint model puts it between the encoder and the classification branch when the label
    loss must not train the encoder (``classifier_trains_encoder=False``): the classifier then
    reads features learned for segmentation only. A registered layer, not a ``Lambda``, so the
    model reloads in Keras' safe mode.
    """

    def call(self, inputs):
        return keras.ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
