"""training.precision: resolved per device, applied to the model only, trainable in 16 bits."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cervixnet import models
from cervixnet.config import load_config
from cervixnet.errors import ConfigError
from cervixnet.training import build_model, compile_model
from cervixnet.training.precision import (
    BFLOAT16_MIN_CONVOLUTION_WIDTH,
    bfloat16_is_faster,
    cpu_has_bfloat16,
    dtype_policy,
    emulation_warning,
    precision_for,
    resolve_precision,
)

BFLOAT16_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16\n"
AVX512_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n"


def test_auto_without_a_model_is_float32_on_a_cpu_and_explicit_values_pass_through() -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("auto", cpuinfo=BFLOAT16_CPU) == "float32"
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert resolve_precision(name) == name
    with pytest.raises(ValueError, match="precision='fp16'"):
        resolve_precision("fp16")


def test_policy_is_restored_after_the_block() -> None:
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


def test_config_refuses_an_unknown_precision(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  precision: fp16\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"training\.precision"):
        load_config(path)


def _tiny_config(precision: str, *, base_filters: int = 4, size: int = 32):
    """A depth-2 joint U-Net; at 64 base filters its median convolution width is 128."""
    return load_config(None).replace(
        {
            "data.image_size": [size, size],
            "model.base_filters": base_filters,
            "model.unet-joint.depth": 2,
            "training.precision": precision,
            "training.epochs": 1,
        }
    )


def test_mixed_bfloat16_model_computes_in_bfloat16_with_float32_outputs_and_trains() -> None:
    model = build_model(_tiny_config("mixed_bfloat16"))
    assert keras.config.dtype_policy().name == "float32"  # nothing leaked
    assert model.get_layer("bottleneck_conv1").compute_dtype == "bfloat16"  # 16 channels
    assert model.get_layer("encoder1_conv1").compute_dtype == "float32"  # 4: too narrow
    assert model.get_layer("encoder1_conv1").variable_dtype == "float32"
    assert model.get_layer("mask").compute_dtype == "float32"
    assert model.get_layer("label").compute_dtype == "float32"
    # The classification branch computes in float32 from its pooling on.
    for name in ("label_head_concat", "label_head_dense1", "label_head_bottleneck_maxpool"):
        assert model.get_layer(name).compute_dtype == "float32", name
    compile_model(model, _tiny_config("mixed_bfloat16"), positive_weight=2.0)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    y = {
        "mask": (x > 0.5).astype("float32"),
        "label": np.array([[0.0], [1.0], [0.0], [1.0]], dtype="float32"),
    }
    before = model.get_layer("encoder1_conv1").get_weights()[0].copy()
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    outputs = model.predict(x, verbose=0)
    mask, label = outputs["mask"], outputs["label"]
    assert mask.dtype == np.float32 and label.dtype == np.float32
    assert not np.array_equal(before, model.get_layer("encoder1_conv1").get_weights()[0])


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n", True),
        ("flags\t\t: fpu sse2 avx2 fma amx_bf16 amx_tile\n", True),
        ("Features\t: fp asimd evtstrm aes sve bf16 i8mm\n", True),  # Arm
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n", False),
        ("model name\t: bf16 in a name is not a flag\nflags\t\t: fpu avx2\n", False),
        ("", False),
    ],
)
def test_bfloat16_instructions_are_read_from_the_cpu_flags(cpuinfo: str, expected: bool) -> None:
    assert cpu_has_bfloat16(cpuinfo) is expected


def test_bfloat16_on_a_cpu_without_the_instructions_is_warned_about() -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    without = "flags\t\t: fpu sse2 avx2 fma\n"
    warning = emulation_warning("mixed_bfloat16", without)
    assert warning is not None and "emulated" in warning and "no bfloat16" in warning
    assert emulation_warning("mixed_bfloat16", "flags\t\t: avx2 avx512_bf16\n") is None
    assert emulation_warning("float32", without) is None
    assert emulation_warning("auto", without) is None  # auto never picks emulated bfloat16


def _skip_on_a_gpu() -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")


def _two_convolutions(channels: int) -> keras.Model:
    """1 -> ``channels`` (cheap), then ``channels`` -> ``channels``: median width ``channels``."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(channels, 3, padding="same")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(channels, 3, padding="same")(x))


def test_auto_picks_bfloat16_on_a_bfloat16_cpu_only_for_wide_models() -> None:
    _skip_on_a_gpu()
    wide = _two_convolutions(BFLOAT16_MIN_CONVOLUTION_WIDTH)
    narrow = _two_convolutions(BFLOAT16_MIN_CONVOLUTION_WIDTH // 2)
    assert resolve_precision("auto", wide, cpuinfo=BFLOAT16_CPU) == "mixed_bfloat16"
    assert resolve_precision("auto", narrow, cpuinfo=BFLOAT16_CPU) == "float32"
    assert resolve_precision("auto", wide, cpuinfo=AVX512_CPU) == "float32"  # emulated there
    assert resolve_precision("float32", wide, cpuinfo=BFLOAT16_CPU) == "float32"
    assert bfloat16_is_faster(wide, cpuinfo=BFLOAT16_CPU, has_gpu=False)
    assert not bfloat16_is_faster(wide, cpuinfo=BFLOAT16_CPU, has_gpu=True)


def _wide_tiny_config(precision: str):
    return _tiny_config(precision, base_filters=64, size=16)


def test_auto_builds_a_wide_model_in_bfloat16_with_the_weights_of_a_float32_build() -> None:
    _skip_on_a_gpu()
    config = _wide_tiny_config("auto")
    builder = models.builder(config.arch)
    kwargs = config.model.builder_kwargs(config.arch)

    def build() -> keras.Model:
        return builder(input_shape=(16, 16, 1), **kwargs)

    keras.utils.set_random_seed(3)
    assert precision_for("auto", build, cpuinfo=BFLOAT16_CPU) == "mixed_bfloat16"
    with dtype_policy("mixed_bfloat16"):
        looked_first = build()
    keras.utils.set_random_seed(3)
    with dtype_policy("mixed_bfloat16"):
        built_directly = build()
    assert looked_first.get_layer("encoder1_conv1").compute_dtype == "bfloat16"
    # The float32 look at the model drew no seeds: the same initial weights as without it.
    for looked, direct in zip(looked_first.weights, built_directly.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(looked), np.asarray(direct))
    assert precision_for("auto", build, cpuinfo=AVX512_CPU) == "float32"
    assert precision_for("float32", build, cpuinfo=BFLOAT16_CPU) == "float32"


def test_compile_resolves_xla_for_the_policy_the_model_was_built_with(monkeypatch) -> None:
    from cervixnet.training import compilation

    _skip_on_a_gpu()
    config = _wide_tiny_config("auto")
    with dtype_policy("float32"):
        model = build_model(config.replace({"training.precision": "mixed_bfloat16"}))
    assert model.dtype_policy.name == "mixed_bfloat16"
    asked = []
    monkeypatch.setattr(
        compilation, "xla_is_faster", lambda model, precision: asked.append(precision) or False
    )
    compile_model(model, config, positive_weight=1.0)  # training.precision is still auto
    assert asked == ["mixed_bfloat16"]
