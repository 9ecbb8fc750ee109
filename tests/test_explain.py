"""Class-activation maps of the joint model's label output (cervixnet.explain, tf-keras-vis)."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from cervixnet import explain, models

SIZE = 32
TINY = {"input_shape": (SIZE, SIZE, 1), "base_filters": 4, "depth": 2, "classifier_units": (8,)}


def joint_model(**kwargs) -> keras.Model:
    keras.utils.set_random_seed(0)
    return models.get("unet-joint", **{**TINY, **kwargs})


def cervix_images() -> tuple[np.ndarray, np.ndarray]:
    """``(2, SIZE, SIZE, 1)`` float32 images: a bright ellipse on speckle, then the same
    background with the ellipse replaced by speckle; and the ellipse's mask ``(SIZE, SIZE)``."""
    rng = np.random.default_rng(0)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, (16, 14), (9, 5), 20.0, 0, 360, 1, -1)
    background = (rng.random((SIZE, SIZE)) * 0.3).astype(np.float32)
    with_cervix = np.where(mask > 0, np.float32(0.9), background)
    without = background.copy()
    without[mask > 0] = (rng.random(int(mask.sum())) * 0.3).astype(np.float32)
    return np.stack([with_cervix, without])[..., None], mask.astype(np.float32)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return joint_model()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return cervix_images()[0]


# ------------------------------------------------------------------------------------------
# Maps
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", explain.METHODS)
def test_maps_have_the_input_size_and_lie_in_unit_range(model, images, method):
    cams = explain.class_activation_maps(model, images, method)
    assert cams.shape == (2, SIZE, SIZE)
    assert cams.dtype == np.float32
    assert np.all(np.isfinite(cams))
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    # Normalised per image: each map either spans [0, 1] or is all zero.
    for cam in cams:
        assert cam.max() == pytest.approx(1.0, abs=1e-6) or not cam.any()
    assert cams.any()


def test_scorecam_max_n_uses_fewer_channels_and_is_capped(model, images):
    few = explain.class_activation_maps(model, images[:1], "scorecam", max_n=2)
    capped = explain.class_activation_maps(model, images[:1], "scorecam", max_n=10_000)
    assert few.shape == capped.shape == (1, SIZE, SIZE)
    assert np.all(np.isfinite(few)) and few.min() >= 0 and few.max() <= 1
    assert not np.allclose(few, capped, atol=1e-3)


def test_map_responds_to_the_input_and_is_deterministic(model, images):
    # images[0] has a bright ellipse, images[1] the same background without it.
    cams = explain.class_activation_maps(model, images, "gradcam")
    assert np.abs(cams[0] - cams[1]).max() > 0.05
    np.testing.assert_array_equal(cams, explain.class_activation_maps(model, images, "gradcam"))
    score_cams = explain.class_activation_maps(model, images, "scorecam")
    assert np.abs(score_cams[0] - score_cams[1]).max() > 0.05
    # Batching does not change the maps.
    one_by_one = explain.class_activation_maps(model, images, batch_size=1)
    np.testing.assert_allclose(one_by_one, cams, atol=1e-5)


def test_the_model_is_not_modified(model, images):
    before = [keras.ops.convert_to_numpy(t) for t in model(images, training=False).values()]
    nodes = len(model.get_layer("label")._inbound_nodes)
    explain.class_activation_maps(model, images, "gradcam++")
    after = [keras.ops.convert_to_numpy(t) for t in model(images, training=False).values()]
    assert model.get_layer("label").activation is keras.activations.sigmoid
    assert len(model.get_layer("label")._inbound_nodes) == nodes
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("trains_encoder", [True, False])
@pytest.mark.parametrize(
    ("features", "expected"),
    [(("bottleneck",), "bottleneck_relu2"), (("bottleneck", "decoder1"), "decoder1_relu2")],
)
def test_default_layer_has_a_nonzero_label_gradient(images, trains_encoder, features, expected):
    model = joint_model(classifier_trains_encoder=trains_encoder, classifier_features=features)
    layer = explain.default_layer(model)
    assert layer == expected
    assert layer in explain.feature_layers(model)

    # The label logit's gradient at the default layer is finite and non-zero, also when the
    # model stops the gradient there (classifier_trains_encoder=False).
    explainer = explain._explainer_model(model)
    probe = keras.Model(explainer.inputs, [explainer.output, explainer.get_layer(layer).output])
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits, feature = probe(x, training=False)
        score = tf.reduce_sum(logits[:, 1])
    gradient = tape.gradient(score, feature)
    assert gradient is not None
    assert np.all(np.isfinite(gradient.numpy())) and np.abs(gradient.numpy()).max() > 0
    # The explainer's logit is the model's: sigmoid(z) == p(preterm).
    probability = keras.ops.convert_to_numpy(model(images, training=False)["label"])[:, 0]
    np.testing.assert_allclose(tf.sigmoid(logits[:, 1]).numpy(), probability, atol=1e-5)

    # Hence the Grad-CAM of one target or the other is not constant (the ReLU keeps one sign).
    preterm = explain.class_activation_maps(model, images, target="preterm")
    control = explain.class_activation_maps(model, images, target="control")
    for index in range(len(images)):
        assert max(preterm[index].std(), control[index].std()) > 0.01, index


def test_feature_layers_are_the_label_ancestors(model):
    names = explain.feature_layers(model)
    assert "bottleneck_relu2" in names and "encoder1_relu1" in names
    assert not any(name.startswith("decoder") for name in names)
    assert "image" not in names and "mask" not in names
    stopped = joint_model(classifier_trains_encoder=False)
    assert "label_head_bottleneck_stop_gradient" in explain.feature_layers(stopped)


def test_an_explicit_layer_is_used(model, images):
    coarse = explain.class_activation_maps(model, images[:1], layer="bottleneck_relu2")
    fine = explain.class_activation_maps(model, images[:1], layer="encoder1_relu2")
    assert coarse.shape == fine.shape == (1, SIZE, SIZE)
    assert not np.allclose(coarse, fine, atol=1e-3)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_unknown_method_or_target_is_rejected(model, images):
    with pytest.raises(ValueError, match=r"method='gradcam-plus'"):
        explain.class_activation_maps(model, images, "gradcam-plus")
    with pytest.raises(ValueError, match=r"target='preterm_birth'"):
        explain.class_activation_maps(model, images, target="preterm_birth")


def test_unknown_layer_is_rejected_with_candidates(model, images):
    with pytest.raises(ValueError, match=r"layer='encoder9_relu2'") as info:
        explain.class_activation_maps(model, images, layer="encoder9_relu2")
    assert "bottleneck_relu2" in str(info.value)
    # A layer of the model that the label does not read (decoder), or not a feature map.
    for name in ("decoder1_relu2", "label_head_dense1", "image"):
        with pytest.raises(ValueError, match=rf"layer='{name}'"):
            explain.class_activation_maps(model, images, layer=name)


def test_segmentation_only_model_is_rejected(images):
    unet = models.get("unet", input_shape=(SIZE, SIZE, 1), base_filters=4, depth=2)
    with pytest.raises(ValueError, match=r"model='unet'.*\['mask'\]"):
        explain.class_activation_maps(unet, images)
    with pytest.raises(ValueError, match=r"model='unet'"):
        explain.default_layer(unet)


def test_images_of_the_wrong_shape_are_rejected(model):
    with pytest.raises(ValueError, match=r"\(2, 48, 48, 1\)"):
        explain.class_activation_maps(model, np.zeros((2, 48, 48, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(32, 32, 1\)"):
        explain.class_activation_maps(model, np.zeros((32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="max_n=0"):
        explain.class_activation_maps(model, np.zeros((1, 32, 32, 1)), "scorecam", max_n=0)


# ------------------------------------------------------------------------------------------
# Pictures
# ------------------------------------------------------------------------------------------


def test_overlay_blends_the_heat_map_where_the_map_is_high():
    image = cervix_images()[0][0]
    cam = np.zeros((SIZE, SIZE), np.float32)
    cam[20:, 20:] = 1.0
    picture = explain.overlay(image, cam)
    gray = cv2.cvtColor(np.round(image[..., 0] * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    assert picture.dtype == np.uint8 and picture.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(picture[:20], gray[:20])  # map 0: plain image
    assert np.abs(picture[20:, 20:].astype(int) - gray[20:, 20:]).max() > 20
    # JET at 1 is red: the red channel rises, the blue one falls.
    assert picture[20:, 20:, 2].mean() > gray[20:, 20:, 2].mean()
    assert picture[20:, 20:, 0].mean() < gray[20:, 20:, 0].mean()
    np.testing.assert_array_equal(explain.overlay(image, cam, alpha=0.0), gray)


def test_overlay_draws_the_mask_outline_and_the_probability():
    images, mask = cervix_images()
    cam = np.zeros((SIZE, SIZE), np.float32)
    plain = explain.overlay(images[0], cam)
    outlined = explain.overlay(images[0], cam, mask_prob=mask[..., None] * 0.8)
    magenta = np.all(outlined == explain.OUTLINE_BGR, axis=-1)
    assert magenta.any() and not np.all(plain == explain.OUTLINE_BGR, axis=-1).any()
    # The outline is on the mask's border, not inside it.
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    border = (mask > 0) & (inner == 0)
    assert border[magenta].all() and magenta[border].mean() > 0.5
    below = explain.overlay(images[0], cam, mask_prob=mask * 0.4)  # under the 0.5 threshold
    np.testing.assert_array_equal(below, plain)

    big = cv2.resize(images[0], (128, 128))
    plain = explain.overlay(big, np.zeros((128, 128)))
    labelled = explain.overlay(big, np.zeros((128, 128)), probability=0.73)
    changed = np.any(labelled != plain, axis=-1)
    rows, cols = np.nonzero(changed)
    assert rows.max() < 20 and cols.min() < 8 and cols.max() > 60  # along the top-left edge
    assert np.all(labelled[changed] == labelled[changed][:, :1])  # white/black/gray text
    other = explain.overlay(big, np.zeros((128, 128)), probability=0.21)
    assert not np.array_equal(labelled, other)
    # On a narrow image the text shrinks to fit instead of running off the edge.
    small = explain.overlay(images[0], cam, probability=0.73)
    assert np.any(small != explain.overlay(images[0], cam, probability=0.21))


def test_overlay_rejects_bad_arguments():
    image = np.zeros((SIZE, SIZE), np.float32)
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        explain.overlay(image, np.zeros((16, 16)))
    with pytest.raises(ValueError, match=r"alpha=1\.5"):
        explain.overlay(image, np.zeros((SIZE, SIZE)), alpha=1.5)
    with pytest.raises(ValueError, match="probability=2"):
        explain.overlay(image, np.zeros((SIZE, SIZE)), probability=2)


def test_explain_images_predicts_and_draws(model, images):
    items = explain.explain_images(model, images, "gradcam")
    outputs = model(images, training=False)
    mask, label = (keras.ops.convert_to_numpy(outputs[name]) for name in ("mask", "label"))
    assert [item.index for item in items] == [0, 1]
    cams = explain.class_activation_maps(model, images)
    for item in items:
        assert item.method == "gradcam" and item.layer == "bottleneck_relu2"
        assert item.target == "preterm"
        assert item.probability == pytest.approx(float(label[item.index, 0]), abs=1e-6)
        np.testing.assert_allclose(item.mask_prob, mask[item.index, ..., 0], atol=1e-6)
        np.testing.assert_array_equal(item.cam, cams[item.index])
        assert item.overlay.dtype == np.uint8 and item.overlay.shape == (SIZE, SIZE, 3)
        expected = explain.overlay(images[item.index], item.cam, item.mask_prob, item.probability)
        np.testing.assert_array_equal(item.overlay, expected)


@pytest.mark.parametrize("method", explain.METHODS)
def test_a_mixed_precision_model_is_explained_in_float32(images, method):
    """A model trained in mixed_bfloat16 gets the maps of its float32 weights, every method."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = joint_model()
    finally:
        keras.config.set_dtype_policy("float32")
    cams = explain.class_activation_maps(mixed, images, method)
    assert cams.any() and np.all(np.isfinite(cams))
    exact = explain.class_activation_maps(models.float32_copy(mixed), images, method)
    np.testing.assert_allclose(cams, exact, atol=1e-5)
