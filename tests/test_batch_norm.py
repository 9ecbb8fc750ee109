"""The fused batch norm gives Keras' BatchNormalization's results, weights and updates."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cervixnet.models.batch_norm import FusedBatchNormalization


def _pair(**kwargs):
    """A Keras layer and a fused one with the same (non-trivial) weights."""
    keras_bn = keras.layers.BatchNormalization(**kwargs)
    fused_bn = FusedBatchNormalization(**kwargs)
    for layer in (keras_bn, fused_bn):
        layer.build((None, 6, 5, 3))
    rng = np.random.default_rng(0)
    for a, b in zip(keras_bn.weights, fused_bn.weights, strict=True):
        value = rng.uniform(0.5, 1.5, a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    return keras_bn, fused_bn


@pytest.mark.parametrize("kwargs", [{}, {"center": False}, {"scale": False, "momentum": 0.9}])
def test_training_step_matches_keras_outputs_gradients_and_moving_statistics(kwargs):
    keras_bn, fused_bn = _pair(**kwargs)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 6, 5, 3)), tf.float32)
    results = []
    for layer in (keras_bn, fused_bn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(1.0, 4.0))
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        results.append((y, grads, [w.numpy() for w in layer.non_trainable_weights]))
    (y_k, g_k, s_k), (y_f, g_f, s_f) = results
    np.testing.assert_allclose(y_f, y_k, atol=1e-4)
    for a, b in zip(g_f, g_k, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)
    for a, b in zip(s_f, s_k, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    # The statistics did move (the test would pass trivially if neither layer updated them).
    assert not np.allclose(s_f[0], 1.0)


def _op_types(layer, x, training):
    graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(x).graph
    return {op.type for op in graph.get_operations()}


def test_the_fused_kernel_runs_in_training_and_keras_layer_does_not():
    keras_bn, fused_bn = _pair()
    x = tf.zeros((2, 6, 5, 3))
    assert "FusedBatchNormV3" in _op_types(fused_bn, x, True)
    assert "FusedBatchNormV3" not in _op_types(keras_bn, x, True)
    assert "FusedBatchNormV3" not in _op_types(FusedBatchNormalization(axis=2), x, True)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_inference_is_one_multiply_add_that_no_convolution_absorbs(dtype):
    # TensorFlow's remapper fuses an inference FusedBatchNormV3 into the convolution before
    # it, which oneDNN ran 8 x slower at batch 1; a multiply-add it leaves alone.
    inputs = keras.Input((8, 8, 16))
    outputs = FusedBatchNormalization(dtype=dtype)(keras.layers.Conv2D(16, 3, dtype=dtype)(inputs))
    model = keras.Model(inputs, outputs)
    x = tf.zeros((1, 8, 8, 16))
    assert "FusedBatchNormV3" not in _op_types(model, x, False)
    assert "FusedBatchNormV3" in _op_types(model, x, True)
    assert model(x, training=False).dtype == ("float32" if dtype == "float32" else "bfloat16")


def test_inference_uses_the_moving_statistics_as_keras_does():
    keras_bn, fused_bn = _pair()
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 6, 5, 3)), tf.float32)
    np.testing.assert_allclose(fused_bn(x, training=False), keras_bn(x, training=False), atol=1e-5)
    frozen = FusedBatchNormalization()
    frozen.build(x.shape)
    frozen.trainable = False  # a frozen layer normalises by its moving statistics
    np.testing.assert_allclose(frozen(x, training=True), x / np.sqrt(1 + 1e-3), atol=1e-5)


def test_bfloat16_input_keeps_float32_statistics_and_bfloat16_output():
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    x = tf.constant(np.random.default_rng(3).normal(1.0, 2.0, (4, 6, 5, 16)), tf.bfloat16)
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.reduce_mean(tf.cast(y, tf.float32), [0, 1, 2]), 0.0, atol=0.05)


@pytest.mark.parametrize("axis", [1, 2])  # channels first (fused), another axis (Keras')
def test_other_axes_match_keras(axis):
    layer = FusedBatchNormalization(axis=axis)
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 3, 4, 5)), tf.float32)
    reference = keras.layers.BatchNormalization(axis=axis)
    np.testing.assert_allclose(layer(x, training=True), reference(x, training=True), atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance, reference.moving_variance, rtol=1e-5)
    np.testing.assert_allclose(layer(x, training=False), reference(x, training=False), atol=1e-5)


@pytest.mark.parametrize(("channels", "fused"), [(16, True), (64, True), (8, False), (24, False)])
def test_bfloat16_is_fused_for_multiples_of_16_channels_only(channels, fused):
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    x = tf.zeros((2, 4, 4, channels), tf.bfloat16)
    assert ("FusedBatchNormV3" in _op_types(layer, x, True)) is fused
    assert "FusedBatchNormV3" in _op_types(FusedBatchNormalization(), tf.zeros(x.shape), True)


def test_inputs_the_kernel_cannot_take_fall_back_to_keras():
    dense = FusedBatchNormalization()
    x2 = tf.constant(np.random.default_rng(5).normal(size=(8, 3)), tf.float32)
    assert dense(x2, training=True).shape == (8, 3)


def test_saves_and_reloads_as_itself(tmp_path):
    inputs = keras.Input((6, 5, 3))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    model.get_layer("bn").moving_mean.assign([1.0, 2.0, 3.0])
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert type(again.get_layer("bn")) is FusedBatchNormalization
    np.testing.assert_array_equal(again.get_layer("bn").moving_mean.numpy(), [1.0, 2.0, 3.0])
