"""Masks of several classes (e.g. anterior and posterior lip): builders ending in a softmax,
the per-class compound loss, and per-class scores."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cervixnet.models as models
from cervixnet import losses, metrics

TINY = {
    "unet": {"base_filters": 4, "depth": 2},
    "unet-joint": {"base_filters": 4, "depth": 2, "classifier_units": [4]},
    "fcn": {"base_filters": 2, "fc_filters": 8},
    "deeplabv3": {"base_filters": 4, "blocks_per_stage": (1, 1, 1, 1), "aspp_filters": 8},
}


@pytest.mark.parametrize("arch", sorted(TINY))
def test_every_builder_ends_in_a_softmax_over_the_classes_and_background(arch, tmp_path):
    model = models.get(arch, input_shape=(32, 32, 1), classes=3, **TINY[arch])
    images = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    mask = np.asarray(models.named_outputs(model, model(images, training=False))["mask"])
    assert mask.shape == (2, 32, 32, 4) and mask.dtype == np.float32
    np.testing.assert_allclose(mask.sum(axis=-1), 1.0, atol=1e-5)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")  # no custom objects
    again = models.named_outputs(reloaded, reloaded(images, training=False))["mask"]
    np.testing.assert_allclose(np.asarray(again), mask, atol=1e-6)
    one = models.get(arch, input_shape=(32, 32, 1), **TINY[arch])
    assert models.named_outputs(one, one(images))["mask"].shape == (2, 32, 32, 1)


@pytest.mark.parametrize("classes", [0, -1, 1.5, True, "2"])
def test_a_bad_number_of_classes_is_refused(classes):
    with pytest.raises(ValueError, match="classes"):
        models.get("unet", input_shape=(32, 32, 1), classes=classes, **TINY["unet"])


def _reference_loss(ids: np.ndarray, probabilities: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * CE + (1 - alpha) * mean foreground Dice loss``, written out in NumPy."""
    channels = probabilities.shape[-1]
    one_hot = np.eye(channels)[ids]
    clipped = np.clip(probabilities, keras.config.epsilon(), 1.0)
    ce = -(one_hot * np.log(clipped)).sum(-1).mean(axis=(1, 2))
    dice = []
    for c in range(1, channels):
        y, p = one_hot[..., c], probabilities[..., c]
        score = (2 * (y * p).sum((1, 2)) + 1e-6) / ((y**2).sum((1, 2)) + (p**2).sum((1, 2)) + 1e-6)
        dice.append(1 - score)
    return alpha * ce + (1 - alpha) * np.mean(dice, axis=0)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_the_compound_loss_per_class_against_numpy(alpha):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 3, (4, 8, 6))
    logits = rng.normal(size=(4, 8, 6, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = _reference_loss(ids, probabilities, alpha)
    got = keras.ops.convert_to_numpy(losses.ce_dice_loss(ids, probabilities, alpha=alpha))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    one_hot = np.eye(3)[ids]  # one-hot truth gives the same
    got = losses.ce_dice_loss(one_hot, probabilities, alpha=alpha)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5)
    perfect = losses.ce_dice_loss(ids[..., None], np.eye(3)[ids], alpha=alpha)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(perfect), 0.0, atol=1e-4)
    loss = keras.losses.deserialize(keras.losses.serialize(losses.CEDiceLoss(alpha=alpha)))
    assert isinstance(loss, losses.CEDiceLoss) and loss.alpha == alpha  # saved with a model
    with pytest.raises(ValueError, match=r"\(B, H, W, K \+ 1\)"):
        losses.ce_dice_loss(ids, probabilities[..., :1])


def test_class_scores_on_a_hand_counted_case():
    truth = np.zeros((1, 4, 4), int)
    truth[0, :2, :2] = 1  # 4 pixels of class 1
    truth[0, 2:, 2:] = 2  # 4 pixels of class 2
    prediction = np.zeros((1, 4, 4), int)
    prediction[0, :2, :3] = 1  # 6 pixels, 4 of them right
    prediction[0, 3, 3] = 2  # 1 pixel, right
    scores = metrics.class_scores_per_image(truth, prediction, classes=2)
    np.testing.assert_allclose(scores["iou"], [[4 / 6, 1 / 4]])
    np.testing.assert_allclose(scores["dice"], [[8 / 10, 2 / 5]])
    np.testing.assert_allclose(scores["union_iou"], [5 / 10])  # 5 of the 10 pixels of either
    probabilities = np.eye(3)[prediction]  # the same prediction as softmax probabilities
    again = metrics.class_scores_per_image(truth, probabilities, classes=2)
    np.testing.assert_allclose(again["dice"], scores["dice"])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        metrics.class_scores_per_image(truth + 1, prediction, classes=2)


def _two_lips(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Images of a bright band whose upper half (class 1) is brighter than its lower half
    (class 2), either side of a dark canal line, at random heights."""
    images = np.zeros((count, 32, 32, 1), np.float32)
    ids = np.zeros((count, 32, 32), np.int64)
    for k in range(count):
        top, left = rng.integers(4, 14), rng.integers(2, 8)
        right = left + rng.integers(18, 24)
        ids[k, top : top + 6, left:right] = 1
        ids[k, top + 6 : top + 12, left:right] = 2
        images[k, ..., 0] = 0.1 + 0.05 * rng.random((32, 32))
        images[k][ids[k] == 1] = 0.9
        images[k][ids[k] == 2] = 0.55
    return images, ids


def test_a_tiny_two_lip_model_learns_each_class():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, ids = _two_lips(rng, 48)
    model = models.get("unet", input_shape=(32, 32, 1), classes=2, base_filters=8, depth=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.CEDiceLoss())
    model.fit(images[:40], ids[:40, ..., None], batch_size=8, epochs=30, verbose=0)
    scores = metrics.class_scores_per_image(ids[40:], model.predict(images[40:], verbose=0), 2)
    # Chance (a class drawn at its share of the pixels) is far below 0.2 for each lip.
    assert scores["dice"].mean(axis=0).min() > 0.8, scores["dice"].mean(axis=0)
    assert scores["union_dice"].mean() > 0.9
