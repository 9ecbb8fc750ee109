"""training.jit_compile: counted FLOPs, and ``auto`` resolved per CPU, precision and model width."""

from __future__ import annotations

import keras
import pytest

from cervixnet.config import load_config
from cervixnet.models.flops import (
    forward_flops_per_image,
    median_convolution_width,
    training_flops_per_image,
)
from cervixnet.training import build_model, compile_model
from cervixnet.training.compilation import (
    XLA_MIN_CONVOLUTION_WIDTH,
    resolve_jit_compile,
    xla_is_faster,
)
from cervixnet.training.cpu import cpu_flags

AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
AVX512 = "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16\n"
AMX = "flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_flops_are_counted_per_layer_kind_and_inside_nested_models() -> None:
    inner_in = keras.Input((4, 4, 6))
    inner = keras.Model(inner_in, keras.layers.Dense(5)(inner_in), name="inner")
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8 x 8 x 4
    x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 4 x 4 x 6
    x = keras.layers.ReLU()(x)
    x = inner(x)  # 4 x 4 x 5: the nested model's Dense on each of the 16 pixels, 6 -> 5
    y = keras.layers.Conv2DTranspose(3, 2, strides=2)(x)  # 8 x 8 x 3
    model = keras.Model(inputs, y)
    expected = (
        2 * 8 * 8 * 9 * 2 * 4  # 3 x 3 convolution
        + 2 * 4 * 4 * 1 * 4 * 6  # 1 x 1, stride 2
        + 2 * 4 * 4 * 6 * 5
        + 2 * 4 * 4 * 2 * 2 * 5 * 3  # transposed: every input pixel scatters a 2 x 2 x 3 patch
    )
    assert forward_flops_per_image(model) == expected
    assert training_flops_per_image(model) == 3 * expected


def test_grouped_convolutions_count_their_groups() -> None:
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, keras.layers.Conv2D(8, 3, padding="same", groups=2)(inputs))
    assert forward_flops_per_image(model) == 2 * 8 * 8 * 9 * 4 * 8 // 2


def _model_of(channels: int, side: int = 8) -> keras.Model:
    """Two 3 x 3 convolutions: 1 -> ``channels`` (cheap), then ``channels`` -> ``channels``."""
    inputs = keras.Input((side, side, 1))
    x = keras.layers.Conv2D(channels, 3, padding="same")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(channels, 3, padding="same")(x))


def test_the_median_width_is_where_half_the_convolution_flops_are() -> None:
    assert median_convolution_width(_model_of(16)) == 16  # the wide layer has most FLOPs
    inputs = keras.Input((16, 16, 4))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)  # 4 in: 2 x 16 x 16 x 9 x 4 x 8
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same")(x)  # 8 in: 2 x 8 x 8 x 9 x 8 x 64 (4 x more)
    x = keras.layers.Conv2DTranspose(4, 2, strides=2)(x)  # 64 in: 2 x 8 x 8 x 4 x 64 x 4
    assert median_convolution_width(keras.Model(inputs, x)) == 8
    dense_only = keras.Input((3,))
    assert median_convolution_width(keras.Model(dense_only, keras.layers.Dense(2)(dense_only))) == 0


@pytest.mark.parametrize(("base_filters", "width"), [(8, 32), (16, 64), (32, 128), (64, 256)])
def test_the_joint_unets_width_follows_its_base_filters(base_filters: int, width: int) -> None:
    config = load_config(None).replace(
        {"data.image_size": [32, 32], "model.base_filters": base_filters,
         "model.unet-joint.depth": 4}
    )  # fmt: skip
    assert median_convolution_width(build_model(config)) == width


def test_auto_turns_xla_on_only_for_wide_float32_models_on_avx2_only_cpus() -> None:
    wide, narrow = _model_of(XLA_MIN_CONVOLUTION_WIDTH), _model_of(XLA_MIN_CONVOLUTION_WIDTH // 2)
    on_avx2 = {"cpuinfo": AVX2, "has_gpu": False, "machine": "x86_64"}
    assert xla_is_faster(wide, "float32", **on_avx2)
    assert not xla_is_faster(narrow, "float32", **on_avx2)
    assert not xla_is_faster(wide, "mixed_bfloat16", **on_avx2)
    assert not xla_is_faster(wide, "float32", **{**on_avx2, "has_gpu": True})
    assert not xla_is_faster(wide, "float32", **{**on_avx2, "machine": "aarch64"})
    for cpuinfo in (AVX512, AMX, "flags\t\t: fpu sse2 sse4_2\n", ""):
        assert not xla_is_faster(wide, "float32", **{**on_avx2, "cpuinfo": cpuinfo})


def test_explicit_settings_pass_through_and_others_are_refused() -> None:
    model = _model_of(4)
    assert resolve_jit_compile(True, model, "float32") is True
    assert resolve_jit_compile(False, model, "float32") is False
    with pytest.raises(ValueError, match="Received: 'yes'"):
        resolve_jit_compile("yes", model, "float32")


def test_cpu_flags_are_the_first_flags_line() -> None:
    assert cpu_flags(AVX2) == {"fpu", "sse2", "avx", "avx2", "fma", "f16c"}
    assert "bf16" in cpu_flags("Features\t: fp asimd sve bf16\n")  # Arm
    assert cpu_flags("model name\t: avx2 in a name is no flag\n") == frozenset()


def test_the_default_config_is_auto_and_leaves_a_small_model_uncompiled() -> None:
    config = load_config(None).replace(
        {"data.image_size": [32, 32], "model.base_filters": 4, "training.epochs": 1}
    )
    assert config.training.jit_compile == "auto"
    model = build_model(config)
    compile_model(model, config, positive_weight=1.0)
    assert model.jit_compile is False
    compile_model(model, config.replace({"training.jit_compile": True}), positive_weight=1.0)
    assert model.jit_compile is True
