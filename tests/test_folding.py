"""Batch norms folded into their convolutions compute the same inference function."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import cervixnet.models as models
from tests.conftest import set_trained_statistics

TINY = {
    "unet": {"input_shape": (32, 32, 1), "base_filters": 4, "depth": 2},
    "unet-joint": {"input_shape": (32, 32, 1), "base_filters": 4, "depth": 2},
    "deeplabv3": {"input_shape": (32, 32, 1), "base_filters": 4, "blocks_per_stage": (1, 1, 1, 1)},
}


def _outputs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    named = models.named_outputs(model, model(x, training=False))
    return [np.asarray(named[name]) for name in sorted(named)]


def _batch_norms(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("arch", sorted(TINY))
def test_folded_model_computes_the_same_outputs(arch):
    keras.utils.set_random_seed(0)
    model = models.get(arch, **TINY[arch])
    set_trained_statistics(model)
    x = np.random.default_rng(1).random((3, 32, 32, 1)).astype("float32")
    before = _outputs(model, x)
    weights = [w.numpy().copy() for w in model.weights]

    folded = models.fold_batch_norms(model)

    assert len(models.foldable_pairs(model)) == len(_batch_norms(model)) > 0
    assert _batch_norms(folded) == []
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert folded.output_names == model.output_names
    for got, want in zip(_outputs(folded, x), before, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-5)
    # The source model is untouched: same weights, same outputs.
    for w, saved in zip(model.weights, weights, strict=True):
        np.testing.assert_array_equal(w.numpy(), saved)
    for got, want in zip(_outputs(model, x), before, strict=True):
        np.testing.assert_array_equal(got, want)


def _conv_bn(x, name, use_bias=False):
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=use_bias, name=f"{name}_conv")(x)
    return models.FusedBatchNormalization(name=f"{name}_bn")(x)


def test_bias_is_folded_and_the_graph_has_no_batch_norm_arithmetic():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.ReLU()(_conv_bn(inputs, "a", use_bias=True))
    model = keras.Model(inputs, _conv_bn(x, "b"))
    set_trained_statistics(model)
    model.get_layer("a_conv").bias.assign(np.linspace(-1.0, 1.0, 5))
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 2)).astype("float32")
    folded = models.fold_batch_norms(model)
    np.testing.assert_allclose(_outputs(folded, x)[0], _outputs(model, x)[0], atol=1e-5)

    def op_types(m):
        graph = tf.function(lambda t: m(t, training=False)).get_concrete_function(x).graph
        return [op.type for op in graph.get_operations()]

    assert "Rsqrt" in op_types(model)  # the unfolded layer's multiply-add
    folded_ops = op_types(folded)
    assert "Rsqrt" not in folded_ops and "FusedBatchNormV3" not in folded_ops
    assert folded_ops.count("BiasAdd") == 2


def test_what_is_not_foldable_is_left_as_it_was():
    inputs = keras.Input((8, 8, 2))
    shared = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared")(inputs)
    branch = models.FusedBatchNormalization(name="shared_bn")(shared)
    # The convolution's output is also read by the Add: folding would change that reader.
    x = keras.layers.Add()([branch, shared])
    activated = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="act")(x)
    x = models.FusedBatchNormalization(name="act_bn")(activated)  # after an activation
    x = _conv_bn(x, "ok")
    model = keras.Model(inputs, x)
    set_trained_statistics(model)
    assert [(c.name, b.name) for c, b in models.foldable_pairs(model)] == [("ok_conv", "ok_bn")]
    folded = models.fold_batch_norms(model)
    assert [layer.name for layer in _batch_norms(folded)] == ["shared_bn", "act_bn"]
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(_outputs(folded, x)[0], _outputs(model, x)[0], atol=1e-5)


def test_a_16_bit_model_is_not_folded():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:  # 16 base filters: every level wide enough to compute in bfloat16
        model = models.get("unet", **{**TINY["unet"], "base_filters": 16})
    finally:
        keras.config.set_dtype_policy("float32")
    assert models.foldable_pairs(model) == []
    assert models.fold_batch_norms(model) is model


def test_only_the_float32_layers_of_a_mixed_model_are_foldable():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:  # levels of 4 and 8 channels compute in float32, the 16-channel bottleneck in bf16
        model = models.get("unet", **TINY["unet"])
    finally:
        keras.config.set_dtype_policy("float32")
    folded = {conv.name for conv, _ in models.foldable_pairs(model)}
    assert folded == {f"{level}_conv{i}" for level in ("encoder1", "encoder2", "decoder2",
                                                       "decoder1") for i in (1, 2)}  # fmt: skip
    assert model.get_layer("bottleneck_conv1").compute_dtype == "bfloat16"


def _mixed(arch: str = "unet") -> keras.Model:
    keras.utils.set_random_seed(5)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return models.get(arch, **TINY[arch])
    finally:
        keras.config.set_dtype_policy("float32")


def test_a_mixed_model_has_a_float32_copy_with_its_weights_and_a_foldable_graph():
    model = _mixed()
    set_trained_statistics(model)
    copy = models.float32_copy(model)
    assert models.policy_name(model) == "mixed_bfloat16"
    assert models.policy_name(copy) == "float32"
    assert {layer.compute_dtype for layer in copy.layers if layer.weights} == {"float32"}
    for original, copied in zip(model.weights, copy.weights, strict=True):
        assert original.path == copied.path
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copied))
    assert len(models.foldable_pairs(copy)) == len(_batch_norms(model)) > 0
    x = np.random.default_rng(4).random((2, 32, 32, 1), dtype=np.float32)
    # The copy computes what the weights define: close to the bfloat16 model, not identical.
    mixed, exact = _outputs(model, x)[0], _outputs(copy, x)[0]
    assert 0 < np.abs(mixed - exact).max() < 0.05
    assert models.float32_copy(copy) is copy  # already float32: nothing to do


def test_a_loaded_model_keeps_the_policy_it_was_built_under(tmp_path):
    model = _mixed()
    model.save(tmp_path / "mixed.keras")
    loaded = keras.models.load_model(tmp_path / "mixed.keras")
    assert models.policy_name(loaded) == "mixed_bfloat16"
