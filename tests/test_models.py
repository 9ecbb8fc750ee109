"""Tests for cervixnet.models: shapes, names, parameter counts, validation, backends, weights."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import cervixnet.models as models
from cervixnet.models import build_deeplabv3, build_fcn, build_unet, build_unet_joint
from cervixnet.models.blocks import BilinearUpsampling

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "cervixnet" / "models"

# Tiny configurations, one per registry name (DeepLab with one block per stage to stay fast).
TINY = {
    "unet": {"base_filters": 4},
    "fcn": {"base_filters": 4},
    "deeplabv3": {"base_filters": 4, "blocks_per_stage": (1, 1, 1, 1)},
    "unet-joint": {"base_filters": 4, "classifier_units": (8,)},
}


def _outputs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """Run ``model`` in inference mode; its outputs as NumPy arrays, ``mask`` first."""
    named = models.named_outputs(model, model(x, training=False))
    return [keras.ops.convert_to_numpy(named[name]) for name in ("mask", "label") if name in named]


def _random_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(0)


# ---------------------------------------------------------------------------------------------
# Outputs: names, shapes, range, dtype
# ---------------------------------------------------------------------------------------------

SHAPE_CASES = [
    (name, input_shape)
    for name in models.names()
    for input_shape in ((32, 32, 1), (32, 32, 3), (64, 32, 1))
]


@pytest.mark.parametrize(("name", "input_shape"), SHAPE_CASES)
def test_output_names_shapes_and_range(name: str, input_shape: tuple[int, int, int]) -> None:
    model = models.get(name, input_shape=input_shape, **TINY[name])
    height, width, _ = input_shape
    x = _random_images((2, *input_shape))
    outputs = _outputs(model, x)

    if models.is_joint(name):
        assert isinstance(model(x, training=False), dict)  # named outputs
        assert sorted(model.output_names) == ["label", "mask"]
        expected_shapes = [(2, height, width, 1), (2, 1)]
    else:
        assert model.output_names == ["mask"]
        expected_shapes = [(2, height, width, 1)]
    assert [o.shape for o in outputs] == expected_shapes
    for out in outputs:
        assert out.dtype == np.float32
        assert np.all(np.isfinite(out))
        assert np.all((out >= 0.0) & (out <= 1.0))


@pytest.mark.parametrize("name", models.names())
def test_output_layers_carry_sigmoid_in_float32(name: str) -> None:
    model = models.get(name, input_shape=(32, 32, 1), **TINY[name])
    output_layers = ["mask", "label"] if models.is_joint(name) else ["mask"]
    for layer_name in output_layers:
        layer = model.get_layer(layer_name)
        assert layer.activation is keras.activations.sigmoid
        assert layer.dtype_policy.compute_dtype == "float32"
    assert model.get_layer("mask").output.shape == (None, 32, 32, 1)
    if models.is_joint(name):
        assert model.get_layer("label").output.shape == (None, 1)
        assert model.get_layer("label").units == 1


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("name", models.names())
def test_outputs_float32_under_mixed_precision(name: str, mixed_precision: None) -> None:
    model = models.get(name, input_shape=(32, 32, 1), **TINY[name])
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[0].dtype_policy.compute_dtype == "float16"
    assert [keras.backend.standardize_dtype(t.dtype) for t in model.outputs] == ["float32"] * len(
        model.outputs
    )


@pytest.mark.parametrize(
    ("policy", "narrow", "wide"),
    [
        ("mixed_bfloat16", "float32", "bfloat16"),
        ("mixed_float16", "float16", "float16"),
        ("float32", "float32", "float32"),
    ],
)
def test_levels_narrower_than_16_channels_compute_in_float32_under_bfloat16(
    policy: str, narrow: str, wide: str
) -> None:
    # oneDNN's bfloat16 kernels work on blocks of 16 channels (blocks.layer_dtype).
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = models.get("unet-joint", input_shape=(32, 32, 1), base_filters=8, depth=2)
    finally:
        keras.config.set_dtype_policy(previous)
    computes = {layer.name: layer.compute_dtype for layer in model.layers}
    level1 = [n for n in computes if n.startswith(("encoder1_", "decoder1_"))]
    assert {"encoder1_conv1", "encoder1_bn2", "encoder1_pool", "decoder1_up", "decoder1_concat",
            "decoder1_relu2"} <= set(level1)  # fmt: skip
    assert {computes[n] for n in level1} == {narrow}
    level2 = [n for n in computes if n.startswith(("encoder2_", "decoder2_"))]
    assert level2 and {computes[n] for n in level2} == {wide}
    assert computes["mask"] == computes["label"] == "float32"
    float32_model = models.get("unet-joint", input_shape=(32, 32, 1), base_filters=8, depth=2)
    assert [w.shape for w in model.weights] == [w.shape for w in float32_model.weights]
    assert {w.dtype for w in model.weights} == {"float32"}


def test_conv_bn_relu_follows_the_16_channel_rule_for_every_architecture() -> None:
    from cervixnet.models.blocks import BFLOAT16_MIN_CHANNELS, layer_dtype

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        assert layer_dtype(BFLOAT16_MIN_CHANNELS - 1) == "float32"
        assert layer_dtype(BFLOAT16_MIN_CHANNELS) is None
        model = models.get("fcn", input_shape=(32, 32, 1), **TINY["fcn"])
    finally:
        keras.config.set_dtype_policy(previous)
    assert layer_dtype(8) is None  # float32 policy: the policy's own
    seen = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name.endswith("_conv1"):
            expected = "float32" if layer.filters < BFLOAT16_MIN_CHANNELS else "bfloat16"
            assert layer.compute_dtype == expected, layer.name
            seen.add(expected)
    assert seen == {"float32", "bfloat16"}


# ---------------------------------------------------------------------------------------------
# Layer names
# ---------------------------------------------------------------------------------------------


def _keras_auto_name_pattern(class_name: str) -> re.Pattern[str]:
    """Names Keras generates for an unnamed ``class_name`` layer (``conv2d``, ``conv2d_3``)."""
    snake = re.sub(r"\W+", "", class_name)
    snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", snake)
    snake = re.sub("([a-z])([A-Z])", r"\1_\2", snake).lower()
    return re.compile(rf"^{re.escape(snake)}(_\d+)?$")


NAMING_CASES = [
    ("unet", {"dropout": 0.3}),
    ("unet", {"batch_norm": False}),
    ("fcn", {}),
    ("fcn", {"batch_norm": True, "fc_dropout": 0.0}),
    ("deeplabv3", {}),
    ("unet-joint", {"dropout": 0.3}),
    (
        "unet-joint",
        {"classifier_features": ("bottleneck", "encoder1"), "classifier_pooling": "avgmax"},
    ),
    ("unet-joint", {"classifier_trains_encoder": False}),
]


@pytest.mark.parametrize(("name", "kwargs"), NAMING_CASES)
def test_no_auto_generated_layer_names(name: str, kwargs: dict) -> None:
    model = models.get(name, input_shape=(32, 32, 1), **{**TINY[name], **kwargs})
    names = [op.name for op in model.operations]
    assert len(names) == len(set(names))
    for op in model.operations:
        assert not _keras_auto_name_pattern(type(op).__name__).match(op.name), (
            f"{type(op).__name__} has an auto-generated name: {op.name}"
        )


def test_unet_layer_naming_scheme() -> None:
    model = build_unet(input_shape=(32, 32, 1), base_filters=4, depth=2, dropout=0.2)
    expected = [
        "image",
        "encoder1_conv1", "encoder1_bn1", "encoder1_relu1",
        "encoder1_conv2", "encoder1_bn2", "encoder1_relu2", "encoder1_pool",
        "encoder2_conv1", "encoder2_bn1", "encoder2_relu1",
        "encoder2_conv2", "encoder2_bn2", "encoder2_relu2", "encoder2_dropout", "encoder2_pool",
        "bottleneck_conv1", "bottleneck_bn1", "bottleneck_relu1",
        "bottleneck_conv2", "bottleneck_bn2", "bottleneck_relu2", "bottleneck_dropout",
        "decoder2_up", "decoder2_concat",
        "decoder2_conv1", "decoder2_bn1", "decoder2_relu1",
        "decoder2_conv2", "decoder2_bn2", "decoder2_relu2",
        "decoder1_up", "decoder1_concat",
        "decoder1_conv1", "decoder1_bn1", "decoder1_relu1",
        "decoder1_conv2", "decoder1_bn2", "decoder1_relu2",
        "mask",
    ]  # fmt: skip
    assert [layer.name for layer in model.layers] == expected


def test_named_layers_of_fcn_and_deeplab() -> None:
    fcn = build_fcn(input_shape=(32, 32, 1), base_filters=4)
    for layer_name in (
        "block1_conv1", "block5_conv3", "block3_pool", "block4_pool", "fc6_conv", "fc7_dropout",
        "fcn_score_fc7", "fcn_score_pool4", "fcn_score_pool3", "fcn_up2_fc7", "fcn_fuse_pool4",
        "fcn_up2_pool4", "fcn_fuse_pool3", "fcn_up8", "mask",
    ):  # fmt: skip
        fcn.get_layer(layer_name)
    deeplab = build_deeplabv3(input_shape=(32, 32, 1), base_filters=4, aspp_rates=(2, 3))
    for layer_name in (
        "stem_conv", "stem_pool", "stage1_block1_shortcut_conv", "stage4_block1_conv2",
        "aspp_1x1_conv", "aspp_rate2_conv", "aspp_rate3_conv", "aspp_pool_gap", "aspp_pool_conv",
        "aspp_pool_upsample", "aspp_concat", "aspp_project_conv", "deeplab_classifier",
        "deeplab_upsample", "mask",
    ):  # fmt: skip
        deeplab.get_layer(layer_name)
    assert deeplab.get_layer("stage4_block1_conv2").dilation_rate == (2, 2)
    assert deeplab.get_layer("stage4_block1_conv2").strides == (1, 1)
    assert deeplab.get_layer("stage3_block1_conv2").strides == (2, 2)
    # Output stride 16: the ASPP sees a 2 x 2 map for a 32 x 32 input.
    assert deeplab.get_layer("aspp_concat").output.shape == (None, 2, 2, 4 * 16)


# ---------------------------------------------------------------------------------------------
# Parameter counts at the paper width, against hand-written formulas
# ---------------------------------------------------------------------------------------------


def _conv(kernel: int, cin: int, cout: int, bias: bool = True) -> int:
    return kernel * kernel * cin * cout + (cout if bias else 0)


def _bn(channels: int, per_channel: int = 4) -> int:
    return per_channel * channels  # gamma, beta (trainable), moving mean, moving variance


def unet_param_count(channels: int, base: int, depth: int, batch_norm: bool = True) -> int:
    def block(cin: int, cout: int) -> int:  # 3x3 conv (+ BN, then no bias)
        return _conv(3, cin, cout, bias=not batch_norm) + (_bn(cout) if batch_norm else 0)

    total, cin = 0, channels
    for level in range(depth + 1):  # encoder levels, then the bottleneck
        filters = base * 2**level
        total += block(cin, filters) + block(filters, filters)
        cin = filters
    for level in reversed(range(depth)):
        filters = base * 2**level
        total += _conv(2, cin, filters)  # 2x2 transposed conv
        total += block(2 * filters, filters) + block(filters, filters)  # after the concat
        cin = filters
    return total + _conv(1, cin, 1)  # mask


def joint_head_param_count(in_features: int, units: tuple[int, ...]) -> int:
    total = 0
    for width in (*units, 1):
        total += in_features * width + width
        in_features = width
    return total


def fcn_param_count(channels: int, base: int, fc_kernel: int = 7) -> int:
    total, cin = 0, channels
    for convs, multiplier in ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8)):
        for _ in range(convs):
            total += _conv(3, cin, base * multiplier)
            cin = base * multiplier
    fc = 64 * base
    total += _conv(fc_kernel, cin, fc) + _conv(1, fc, fc)  # fc6, fc7
    total += _conv(1, fc, 1) + _conv(1, 8 * base, 1) + _conv(1, 4 * base, 1)  # scores
    return total + 4 * 4 + 4 * 4 + 16 * 16  # transposed convs, 1 -> 1 channel, no bias


def resnet_param_count(
    channels: int, base: int, blocks: tuple[int, ...], bn_per_channel: int = 4
) -> int:
    """Stem and bottleneck stages, without a classifier."""

    def conv_bn(kernel: int, cin: int, cout: int) -> int:
        return _conv(kernel, cin, cout, bias=False) + _bn(cout, bn_per_channel)

    total, cin = conv_bn(7, channels, base), base
    for stage, count in enumerate(blocks):
        width = base * 2**stage
        for block in range(count):
            total += (
                conv_bn(1, cin, width) + conv_bn(3, width, width) + conv_bn(1, width, 4 * width)
            )
            if block == 0:  # channel change (and stride in stages 2-3): projection shortcut
                total += conv_bn(1, cin, 4 * width)
            cin = 4 * width
    return total


def aspp_head_param_count(cin: int, aspp: int, rates: int = 3) -> int:
    """ASPP (1x1, one 3x3 per rate, image pooling), projection and 1x1 classifier."""

    def conv_bn(kernel: int, cin: int, cout: int) -> int:
        return _conv(kernel, cin, cout, bias=False) + _bn(cout)

    total = conv_bn(1, cin, aspp) + rates * conv_bn(3, cin, aspp) + conv_bn(1, cin, aspp)
    total += conv_bn(1, (2 + rates) * aspp, aspp)
    return total + _conv(1, aspp, 1)


def deeplab_param_count(channels: int, base: int, blocks: tuple[int, ...]) -> int:
    return resnet_param_count(channels, base, blocks) + aspp_head_param_count(32 * base, 4 * base)


def test_unet_formula_matches_layer_by_layer_sum() -> None:
    # The U-Net of Ronneberger et al. (biases, no BN) with a 1-channel input and output, written
    # out layer by layer as (kernel, in, out), checks the loop in unet_param_count.
    layers_3x3 = [
        (1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512),
        (512, 512), (512, 1024), (1024, 1024),  # encoder and bottleneck
        (1024, 512), (512, 512), (512, 256), (256, 256), (256, 128), (128, 128),
        (128, 64), (64, 64),  # decoder, after each concat
    ]  # fmt: skip
    ups_2x2 = [(1024, 512), (512, 256), (256, 128), (128, 64)]
    by_hand = sum(9 * a * b + b for a, b in layers_3x3) + sum(4 * a * b + b for a, b in ups_2x2)
    by_hand += 64 + 1  # 1x1 conv to the mask
    assert by_hand == 31_030_593
    assert unet_param_count(1, 64, 4, batch_norm=False) == by_hand
    # The figure usually quoted for this U-Net is for RGB input: 2 * 9 * 64 weights more.
    assert unet_param_count(3, 64, 4, batch_norm=False) == 31_031_745
    # With BN: biases dropped (-1 per channel), BN added (+4 per channel), 18 conv layers.
    channels = sum(b for _, b in layers_3x3)
    assert unet_param_count(1, 64, 4) == by_hand + 3 * channels


PAPER_WIDTH_CASES = [
    ("unet", lambda: build_unet(), unet_param_count(1, 64, 4)),
    ("unet-nobn", lambda: build_unet(batch_norm=False), unet_param_count(1, 64, 4, False)),
    (
        "unet-joint",
        lambda: build_unet_joint(),
        unet_param_count(1, 64, 4) + joint_head_param_count(1024, (256, 64)),
    ),
    ("fcn", lambda: build_fcn(), fcn_param_count(1, 64)),
    ("deeplabv3", lambda: build_deeplabv3(), deeplab_param_count(1, 64, (3, 4, 6, 3))),
]


@pytest.mark.parametrize(
    ("label", "build", "expected"), PAPER_WIDTH_CASES, ids=[c[0] for c in PAPER_WIDTH_CASES]
)
def test_param_counts_at_paper_width(label: str, build, expected: int) -> None:
    assert build().count_params() == expected


def test_param_counts_at_paper_width_are_plausible() -> None:
    # Anchors from the literature, as a sanity check on the formulas themselves.
    assert 31.0e6 < unet_param_count(1, 64, 4) < 31.1e6
    # keras.applications.VGG16(include_top=False) has 14,714,688 parameters on RGB input.
    assert fcn_param_count(3, 64) - (102_764_544 + 16_781_312 + 4097 + 513 + 257 + 288) == (
        14_714_688
    )
    # torchvision's ResNet-50 without its fc layer has 25,557,032 - 2,049,000 = 23,508,032
    # parameters on RGB input (no conv biases; BN's gamma and beta, 2 per channel).
    assert resnet_param_count(3, 64, (3, 4, 6, 3), bn_per_channel=2) == 23_508_032


def test_small_width_param_counts() -> None:
    assert build_unet(input_shape=(32, 32, 1), base_filters=4).count_params() == (
        unet_param_count(1, 4, 4)
    )
    assert build_fcn(input_shape=(32, 32, 3), base_filters=4).count_params() == (
        fcn_param_count(3, 4)
    )
    assert build_deeplabv3(input_shape=(32, 32, 3), base_filters=4).count_params() == (
        deeplab_param_count(3, 4, (3, 4, 6, 3))
    )


# ---------------------------------------------------------------------------------------------
# Joint model options
# ---------------------------------------------------------------------------------------------


def test_joint_model_shares_unet_layers() -> None:
    unet = build_unet(input_shape=(32, 32, 1), base_filters=4, depth=2)
    joint = build_unet_joint(input_shape=(32, 32, 1), base_filters=4, depth=2)
    unet_names = {layer.name for layer in unet.layers}
    joint_names = {layer.name for layer in joint.layers}
    assert unet_names <= joint_names
    assert {n for n in joint_names - unet_names if not n.startswith("label_head_")} == {"label"}


CLASSIFIER_CASES = [
    # (kwargs, expected pooled width) for base 4, depth 2: encoder1 4, encoder2 8, bottleneck 16
    ({}, 16),
    ({"classifier_features": "encoder1"}, 4),
    ({"classifier_features": ["encoder1", "encoder2"], "classifier_pooling": "max"}, 12),
    ({"classifier_features": ("bottleneck", "encoder1"), "classifier_pooling": "avgmax"}, 40),
    ({"classifier_features": ["decoder1", "decoder2"]}, 12),
    ({"classifier_features": ("bottleneck", "decoder1"), "classifier_pooling": "avgmax"}, 40),
]


@pytest.mark.parametrize(("kwargs", "pooled_width"), CLASSIFIER_CASES)
def test_joint_classifier_features(kwargs: dict, pooled_width: int) -> None:
    model = build_unet_joint(
        input_shape=(32, 32, 1), base_filters=4, depth=2, classifier_units=(), **kwargs
    )
    assert model.get_layer("label").kernel.shape == (pooled_width, 1)
    outputs = _outputs(model, _random_images((2, 32, 32, 1)))
    assert outputs[1].shape == (2, 1)  # label


def test_dropout_layers_only_when_enabled() -> None:
    def dropout_names(model: keras.Model) -> list[str]:
        return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout)]

    plain = build_unet_joint(input_shape=(32, 32, 1), base_filters=4, classifier_dropout=0.0)
    assert dropout_names(plain) == []
    with_dropout = build_unet_joint(
        input_shape=(32, 32, 1), base_filters=4, dropout=0.5, classifier_units=(8, 4)
    )
    assert dropout_names(with_dropout) == [
        "encoder4_dropout", "bottleneck_dropout", "label_head_dropout1", "label_head_dropout2"
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Argument validation
# ---------------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    # (builder, kwargs, exception, expected substring of the message)
    (build_unet, {"input_shape": (100, 100, 1)}, ValueError,
     "divisible by 16 (U-Net: 2**depth = 16 for depth=4). Received: input_shape=(100, 100, 1)"),
    (build_unet, {"input_shape": (64, 64, 1), "depth": 7}, ValueError, "divisible by 128"),
    (build_unet, {"input_shape": (256, 256)}, ValueError, "input_shape` must be a tuple of 3"),
    (build_unet, {"input_shape": (256, 256, 1, 1)}, ValueError, "Received: input_shape="),
    (build_unet, {"input_shape": (256, 256, 0)}, ValueError, "positive ints"),
    (build_unet, {"input_shape": (256.0, 256, 1)}, ValueError, "input_shape"),
    (build_unet, {"input_shape": "256"}, ValueError, "input_shape"),
    (build_unet, {"base_filters": 0}, ValueError, "Received: base_filters=0"),
    (build_unet, {"base_filters": -4}, ValueError, "`base_filters` must be a positive int"),
    (build_unet, {"base_filters": 2.5}, ValueError, "base_filters=2.5"),
    (build_unet, {"depth": 0}, ValueError, "Received: depth=0"),
    (build_unet, {"depth": "4"}, ValueError, "depth"),
    (build_unet, {"dropout": 1.0}, ValueError, "`dropout` must be a float in [0, 1)"),
    (build_unet, {"dropout": -0.1}, ValueError, "Received: dropout=-0.1"),
    (build_unet, {"dropout": True}, ValueError, "dropout"),
    (build_unet, {"batch_norm": "yes"}, ValueError, "batch_norm"),
    (build_unet, {"name": ""}, ValueError, "name"),
    (build_unet, {"weights": 3}, ValueError, "Received: weights=3"),
    (build_unet, {"weights": "model.h5"}, ValueError, ".weights.h5"),
    (build_unet, {"weights": "/no/such/unet.weights.h5"}, FileNotFoundError,
     "/no/such/unet.weights.h5"),
    (build_unet_joint, {"classifier_features": "encoder5"}, ValueError,
     "encoder3, encoder4, decoder1, decoder2, decoder3, decoder4 (for depth=4). "
     "Received: classifier_features='encoder5'"),
    (build_unet_joint, {"classifier_features": []}, ValueError, "classifier_features"),
    (build_unet_joint, {"classifier_features": ["encoder1", "encoder1"]}, ValueError, "distinct"),
    (build_unet_joint, {"classifier_features": 3}, ValueError, "classifier_features=3"),
    (build_unet_joint, {"classifier_pooling": "sum"}, ValueError, "classifier_pooling='sum'"),
    (build_unet_joint, {"classifier_trains_encoder": 1}, ValueError, "classifier_trains_encoder=1"),
    (build_unet_joint, {"classifier_units": (64, 0)}, ValueError, "classifier_units"),
    (build_unet_joint, {"classifier_units": 64}, ValueError, "classifier_units=64"),
    (build_unet_joint, {"classifier_dropout": 1.5}, ValueError, "classifier_dropout=1.5"),
    (build_unet_joint, {"input_shape": (40, 40, 1)}, ValueError, "divisible by 16"),
    (build_unet_joint, {"depth": 0}, ValueError, "depth"),
    (build_fcn, {"input_shape": (48, 48, 1)}, ValueError,
     "divisible by 32 (FCN-8s: five 2x poolings, 2**5 = 32). Received: input_shape=(48, 48, 1)"),
    (build_fcn, {"base_filters": 0}, ValueError, "base_filters"),
    (build_fcn, {"fc_filters": 0}, ValueError, "fc_filters=0"),
    (build_fcn, {"fc_kernel_size": 0}, ValueError, "fc_kernel_size"),
    (build_fcn, {"fc_dropout": 1}, ValueError, "fc_dropout"),
    (build_fcn, {"batch_norm": 1}, ValueError, "batch_norm"),
    (build_deeplabv3, {"input_shape": (40, 40, 1)}, ValueError,
     "divisible by 16 (DeepLabv3 at output stride 16). Received: input_shape=(40, 40, 1)"),
    (build_deeplabv3, {"base_filters": 0}, ValueError, "base_filters"),
    (build_deeplabv3, {"blocks_per_stage": (3, 4, 6)}, ValueError, "exactly 4"),
    (build_deeplabv3, {"blocks_per_stage": (3, 4, 0, 3)}, ValueError, "blocks_per_stage"),
    (build_deeplabv3, {"aspp_filters": 0}, ValueError, "aspp_filters"),
    (build_deeplabv3, {"aspp_rates": (6, 6)}, ValueError, "aspp_rates"),
    (build_deeplabv3, {"aspp_rates": (6, 0)}, ValueError, "aspp_rates"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("builder", "kwargs", "error", "message"),
    BAD_ARGUMENTS,
    ids=[f"{b.__name__}-{'-'.join(k)}-{i}" for i, (b, k, _, _) in enumerate(BAD_ARGUMENTS)],
)
def test_bad_arguments_raise(builder, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        builder(**kwargs)
    assert message in str(info.value)


def test_numpy_ints_are_accepted() -> None:
    model = build_unet(input_shape=tuple(np.array([32, 32, 1])), base_filters=np.int64(4))
    assert model.input_shape == (None, 32, 32, 1)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_names_and_is_joint() -> None:
    assert models.names() == ("unet", "fcn", "deeplabv3", "unet-joint")
    assert [models.is_joint(n) for n in models.names()] == [False, False, False, True]
    assert set(models.__all__) == {
        "build_unet", "build_fcn", "build_deeplabv3", "build_unet_joint", "get", "names",
        "is_joint", "builder", "FusedBatchNormalization", "fold_batch_norms", "foldable_pairs",
        "float32_copy", "policy_name", "has_label", "named_outputs",
    }  # fmt: skip
    assert models.builder("unet-joint") is build_unet_joint
    assert models.builder("fcn") is build_fcn


@pytest.mark.parametrize(
    ("name", "model_name"),
    [("unet", "unet"), ("fcn", "fcn"), ("deeplabv3", "deeplabv3"), ("unet-joint", "unet_joint")],
)
def test_get_builds_each_architecture(name: str, model_name: str) -> None:
    model = models.get(name, input_shape=(32, 32, 1), **TINY[name])
    assert isinstance(model, keras.Model)
    assert model.name == model_name


@pytest.mark.parametrize("function", [models.get, models.is_joint])
def test_unknown_architecture(function) -> None:
    with pytest.raises(ValueError) as info:
        function("foo")
    assert str(info.value) == (
        "Unknown architecture 'foo'. Expected one of: unet, fcn, deeplabv3, unet-joint. "
        "Received: name='foo'"
    )


# ---------------------------------------------------------------------------------------------
# Backends: no TensorFlow
# ---------------------------------------------------------------------------------------------


def test_models_source_never_imports_tensorflow_at_module_level() -> None:
    # A function may import it where only the TensorFlow backend reaches it (the fused batch
    # norm's kernel); test_models_build_without_tensorflow checks it is not reached elsewhere.
    for path in sorted(MODELS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        in_functions = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in in_functions:
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in ("tensorflow", "tf_keras"), (
                    f"{path.name} imports {module}"
                )


def _run_python(code: str, backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


# JAX, the GPU machine's backend, is covered by test_every_architecture_trains_a_step_on_jax.
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_models_build_without_tensorflow(backend: str) -> None:
    if backend != "numpy" and importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    probe = _run_python("import keras", backend)
    if probe.returncode != 0:
        # Keras 3.15's numpy backend imports jax (for fft), so it needs jax installed.
        last_line = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "?"
        pytest.skip(f"Keras cannot start on the {backend} backend here: {last_line}")
    code = (
        "import cervixnet.models as m; "
        "m.get('unet-joint', input_shape=(32, 32, 1), base_filters=4); "
        "import sys; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    result = _run_python(code, backend)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Training and weights
# ---------------------------------------------------------------------------------------------


def test_joint_model_trains_one_step() -> None:
    model = build_unet_joint(
        input_shape=(32, 32, 1), base_filters=4, depth=2, classifier_units=(8,)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss={"mask": "binary_crossentropy", "label": "binary_crossentropy"},
        loss_weights={"mask": 1.0, "label": 0.8},
        jit_compile=False,
    )
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    y = {
        "mask": (rng.random((4, 32, 32, 1)) > 0.5).astype("float32"),
        "label": np.array([[0.0], [1.0], [0.0], [1.0]], dtype="float32"),
    }
    before = [w.copy() for w in model.get_layer("label").get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert {"mask_loss", "label_loss"} <= set(history.history)
    after = model.get_layer("label").get_weights()
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize("trains_encoder", [True, False])
def test_classifier_trains_encoder_switch(trains_encoder: bool) -> None:
    # A label-only loss must move the encoder's kernels exactly when the switch allows it.
    model = build_unet_joint(
        input_shape=(32, 32, 1),
        base_filters=4,
        depth=2,
        classifier_units=(8,),
        classifier_trains_encoder=trains_encoder,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss={"mask": "binary_crossentropy", "label": "binary_crossentropy"},
        loss_weights={"mask": 0.0, "label": 1.0},
        jit_compile=False,
    )
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    y = {"mask": np.zeros((4, 32, 32, 1), "float32"), "label": np.ones((4, 1), "float32")}
    encoder_before = model.get_layer("encoder1_conv1").get_weights()[0].copy()
    head_before = model.get_layer("label").get_weights()[0].copy()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    encoder_moved = not np.array_equal(
        encoder_before, model.get_layer("encoder1_conv1").get_weights()[0]
    )
    assert encoder_moved is trains_encoder
    assert not np.array_equal(head_before, model.get_layer("label").get_weights()[0])
    stops = [layer.name for layer in model.layers if "stop_gradient" in layer.name]
    assert stops == ([] if trains_encoder else ["label_head_bottleneck_stop_gradient"])


@pytest.mark.parametrize("name", models.names())
def test_weights_round_trip(name: str, tmp_path: Path) -> None:
    first = models.get(name, input_shape=(32, 32, 1), **TINY[name])
    path = tmp_path / f"{name}.weights.h5"
    first.save_weights(path)
    keras.utils.set_random_seed(123)  # the second model starts from different random weights
    second = models.get(name, input_shape=(32, 32, 1), weights=str(path), **TINY[name])
    x = _random_images((2, 32, 32, 1), seed=1)
    for a, b in zip(_outputs(first, x), _outputs(second, x), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", models.names())
def test_keras_file_round_trip(name: str, tmp_path: Path) -> None:
    model = models.get(name, input_shape=(32, 32, 1), **TINY[name])
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects needed
    from_weights = models.get(name, input_shape=(32, 32, 1), weights=path, **TINY[name])
    x = _random_images((2, 32, 32, 1), seed=2)
    expected = _outputs(model, x)
    for other in (loaded, from_weights):
        for a, b in zip(expected, _outputs(other, x), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_mismatched_weights_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "unet.weights.h5"
    build_unet(input_shape=(32, 32, 1), base_filters=4).save_weights(path)
    with pytest.raises(ValueError):
        build_unet(input_shape=(32, 32, 1), base_filters=8, weights=path)


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kernel", "stride"), [(4, 2), (16, 8)])
def test_bilinear_upsampling_initializer(kernel: int, stride: int) -> None:
    layer = keras.layers.Conv2DTranspose(
        1, kernel, strides=stride, padding="same", use_bias=False,
        kernel_initializer=BilinearUpsampling(),
    )  # fmt: skip
    ramp = np.tile(np.arange(8, dtype="float32"), (8, 1))[None, :, :, None]
    out = keras.ops.convert_to_numpy(layer(ramp))[0, 4 * stride, :, 0]
    # Half-pixel bilinear interpolation: output column i samples input x = (i + 0.5) / s - 0.5.
    expected = (np.arange(8 * stride) + 0.5) / stride - 0.5
    interior = slice(stride, 7 * stride)  # away from the zero-padded border
    np.testing.assert_allclose(out[interior], expected[interior], atol=1e-5)
    assert BilinearUpsampling.from_config(BilinearUpsampling().get_config()).get_config() == {}


def test_bilinear_upsampling_rejects_non_square_kernel() -> None:
    with pytest.raises(ValueError, match="shape"):
        BilinearUpsampling()((4, 2, 1, 1))


@pytest.mark.slow
def test_every_architecture_trains_a_step_on_jax() -> None:
    # The GPU path: cervixnet's models, losses and metrics under Keras on JAX, no TensorFlow.
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    code = """
import sys
import keras
import numpy as np
from cervixnet import losses, metrics, models

rng = np.random.default_rng(0)
x = rng.random((2, 32, 32, 1), dtype=np.float32)
mask = (x > 0.5).astype("float32")
label = np.array([[0.0], [1.0]], dtype="float32")
# The smallest of each builder: XLA's compile time grows with the number of layers.
smallest = {
    "unet": {"depth": 2},
    "unet-joint": {"depth": 2},
    "deeplabv3": {"blocks_per_stage": (1, 1, 1, 1)},
}
for name in models.names():
    model = models.get(name, input_shape=(32, 32, 1), base_filters=4, **smallest.get(name, {}))
    joint = models.is_joint(name)
    mask_loss = losses.BCEDiceLoss(0.5)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss={"mask": mask_loss, "label": losses.WeightedBinaryCrossentropy(3.0)}
        if joint else mask_loss,
        metrics={"mask": [metrics.PerImageIoU()], "label": [metrics.Specificity()]}
        if joint else [metrics.PerImageIoU()],
    )
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, {"mask": mask, "label": label} if joint else mask, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), name
    changed = any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert changed, name
assert keras.backend.backend() == "jax"
assert "tensorflow" not in sys.modules, "tensorflow was imported"
print("ok")
"""
    result = _run_python(code, "jax")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
