"""Training augmentation (``cervixnet.data.pipeline.build_augmenter``)."""

import dataclasses
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from cervixnet.config import AugmentConfig
from cervixnet.data.manifest import read_manifest
from cervixnet.data.pipeline import affine_transforms, build_augmenter, make_dataset, warp_affine

SIZE = 32
NO_INTENSITY = {"brightness": 0.0, "contrast": 0.0, "noise_std": 0.0}
GEOMETRY = {
    "rotation": AugmentConfig(rotation_degrees=45, crop=0.0, **NO_INTENSITY),
    "crop": AugmentConfig(rotation_degrees=0, crop=0.3, **NO_INTENSITY),
    "rotation+crop": AugmentConfig(rotation_degrees=45, crop=0.3, **NO_INTENSITY),
}


def _shapes(n: int = 4) -> np.ndarray:
    """``(n, SIZE, SIZE, 1)`` binary masks: a tilted ellipse with a bar, different per image."""
    masks = np.zeros((n, SIZE, SIZE, 1), np.float32)
    for i in range(n):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.ellipse(mask, (13 + i, 15), (9, 5), 20.0 * i, 0, 360, 1, -1)
        mask[10:14, 18:24] = 1
        masks[i, ..., 0] = mask
    return masks


def _key(seed: int) -> tf.Tensor:
    return tf.constant([seed, 0], tf.int64)


def _run(config: AugmentConfig, images: np.ndarray, masks: np.ndarray, seed: int = 0):
    augment = build_augmenter(config)
    assert augment is not None
    new_images, new_masks = augment(tf.constant(images), tf.constant(masks), _key(seed))
    assert new_images.shape == images.shape and new_masks.shape == masks.shape
    return new_images.numpy(), new_masks.numpy()


def _near_edge(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of a 0/1 transition of a 2-D binary ``mask``."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    mask = mask.astype(np.uint8)
    return cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)


@pytest.mark.parametrize(
    ("name", "radius", "min_iou"),
    [("rotation", 1, 0.95), ("crop", 1, 0.95), ("rotation+crop", 2, 0.85)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_follows_every_geometric_transform(name, radius, min_iou, seed):
    # The image is the mask itself: the bilinear image, thresholded, must match the nearest-
    # neighbour mask up to the edge (one pixel per resampling).
    masks = _shapes()
    images, new_masks = _run(GEOMETRY[name], masks, masks, seed)
    assert set(np.unique(new_masks)) == {0.0, 1.0}
    moved = np.sum(new_masks != masks, axis=(1, 2, 3))
    assert np.count_nonzero(moved >= 10) >= 2, moved  # the geometry did something
    for image, mask in zip(images[..., 0] > 0.5, new_masks[..., 0] > 0.5, strict=True):
        differ = image != mask
        assert not np.any(differ & ~_near_edge(mask, radius)), "image and mask apart"
        assert (image & mask).sum() / (image | mask).sum() >= min_iou


def test_rotation_stays_within_its_range():
    # A horizontal bar through the centre: its axis (from image moments) is the angle.
    bars = np.zeros((8, SIZE, SIZE, 1), np.float32)
    bars[:, 15:17, 4:28] = 1.0
    config = AugmentConfig(rotation_degrees=15, crop=0.0, **NO_INTENSITY)
    _, masks = _run(config, bars, bars, seed=4)
    angles = []
    for mask in masks[..., 0]:
        m = cv2.moments(mask, binaryImage=True)
        angles.append(np.degrees(0.5 * np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"])))
    angles = np.abs(angles)
    assert angles.max() <= 15 + 1.5, angles
    assert angles.max() >= 5, angles  # it does rotate


def test_crop_window_is_inside_square_and_random():
    # Channel 0 holds x / (W - 1), channel 1 y / (H - 1): after a crop-and-resize each row
    # (column) runs linearly from the window's first to its last coordinate.
    ramp = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)
    images = np.zeros((8, SIZE, SIZE, 2), np.float32)
    images[..., 0] = ramp[None, None, :]
    images[..., 1] = ramp[None, :, None]
    masks = np.zeros((8, SIZE, SIZE, 1), np.float32)
    crop = 0.3
    out, _ = _run(GEOMETRY["crop"], images, masks, seed=3)
    x0, x1 = out[:, 0, 0, 0], out[:, 0, -1, 0]
    y0, y1 = out[:, 0, 0, 1], out[:, -1, 0, 1]
    atol = 1.5 / 32 / (SIZE - 1)  # OpenCV places each bilinear sample to 1/32 of a pixel
    assert np.all(x0 >= -atol) and np.all(x1 <= 1 + atol)  # inside: never pads
    assert np.all(y0 >= -atol) and np.all(y1 <= 1 + atol)
    np.testing.assert_allclose(x1 - x0, y1 - y0, atol=atol)  # one side fraction for both
    assert np.all(x1 - x0 >= 1 - crop - atol)  # keeps at least (1 - crop) of each side
    assert np.all(x1 - x0 < 1 - atol)  # zooms in
    assert np.ptp(x1 - x0) > 0.05  # random scale
    assert np.ptp((x0 + x1) / 2) > 0.02 and np.ptp((y0 + y1) / 2) > 0.02  # random position


def test_crop_only_zooms_in():
    ones = np.ones((4, SIZE, SIZE, 1), np.float32)
    images, masks = _run(GEOMETRY["crop"], ones, ones, seed=5)
    np.testing.assert_allclose(images, 1.0, atol=1e-6)  # no border of zeros
    np.testing.assert_array_equal(masks, 1.0)

    # A square in the central region that every window contains can only grow.
    square = np.zeros((4, SIZE, SIZE, 1), np.float32)
    square[:, 11:21, 11:21] = 1.0
    _, masks = _run(GEOMETRY["crop"], square, square, seed=5)
    areas = masks.sum(axis=(1, 2, 3))
    assert np.all(areas >= 0.8 * 100)  # nearest rounding may drop a row at a scale near 1
    assert areas.mean() > 1.1 * 100


def test_speckle_noise_is_multiplicative_gaussian_additive():
    zeros = np.zeros((2, SIZE, SIZE, 1), np.float32)
    masks = np.zeros_like(zeros)
    speckle = AugmentConfig(
        rotation_degrees=0, crop=0, brightness=0, contrast=0, noise="speckle", noise_std=0.05
    )
    gaussian = AugmentConfig(
        rotation_degrees=0, crop=0, brightness=0, contrast=0, noise="gaussian", noise_std=0.05
    )
    np.testing.assert_array_equal(_run(speckle, zeros, masks)[0], 0.0)
    assert np.mean(_run(gaussian, zeros, masks)[0] > 0) > 0.3  # clipped at 0: about half

    half = np.full((4, SIZE, SIZE, 1), 0.5, np.float32)
    masks = np.zeros_like(half)
    masks[:, 8:20] = 1.0
    images, new_masks = _run(gaussian, half, masks)
    np.testing.assert_array_equal(new_masks, masks)
    assert abs(images.mean() - 0.5) < 0.005
    assert abs(images.std() - 0.05) < 0.005
    images, _ = _run(speckle, half, masks)
    assert abs(images.mean() - 0.5) < 0.005
    assert abs(images.std() - 0.5 * 0.05) < 0.0025  # std of image * n


def test_full_augmentation_keeps_masks_binary_and_images_in_range():
    rng = np.random.default_rng(0)
    images = rng.random((4, SIZE, SIZE, 1), dtype=np.float32)
    config = AugmentConfig(rotation_degrees=30, crop=0.2, brightness=0.3, contrast=0.3)
    for noise in ("gaussian", "speckle"):
        for seed in range(3):
            new_images, new_masks = _run(
                dataclasses.replace(config, noise=noise), images, _shapes(), seed
            )
            assert set(np.unique(new_masks)) == {0.0, 1.0}
            assert new_images.min() >= 0.0 and new_images.max() <= 1.0


def test_same_seed_same_output_other_seed_other_output():
    rng = np.random.default_rng(1)
    images = rng.random((4, SIZE, SIZE, 1), dtype=np.float32)
    masks = _shapes()

    def outputs(seed: int, tf_seed: int) -> list[np.ndarray]:
        tf.random.set_seed(tf_seed)  # TensorFlow's global seed must not matter
        augment = build_augmenter(AugmentConfig())
        augment(tf.constant(images), tf.constant(masks), _key(99))  # nor what ran before
        new_images, new_masks = augment(tf.constant(images), tf.constant(masks), _key(seed))
        return [new_images.numpy(), new_masks.numpy()]

    try:
        first, again, other = outputs(7, 1), outputs(7, 2), outputs(8, 1)
    finally:
        tf.random.set_seed(None)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def _warp(images, degrees, side, corner, interpolation="bilinear") -> np.ndarray:
    size = tf.constant(images.shape[1:3])
    transforms = affine_transforms(
        tf.constant(degrees, tf.float32),
        tf.constant(side, tf.float32),
        tf.constant(corner, tf.float32),
        size,
    )
    return warp_affine(np.asarray(images), transforms.numpy(), interpolation)


def _smooth(n: int, height: int, width: int) -> np.ndarray:
    """``(n, height, width, 1)`` smooth images in [0.1, 0.9], different per image."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phase = np.arange(n)[:, None, None]
    return (0.5 + 0.4 * np.sin(5 * x + 3 * y + phase))[..., None].astype(np.float32)


def test_rotation_is_keras_random_rotation_for_the_same_angle():
    images = tf.constant(_smooth(3, 20, 24))
    layer = keras.layers.RandomRotation(0.1, fill_mode="constant")
    transformation = layer.get_random_transformation(images, training=True, seed=5)
    expected = layer.transform_images(images, transformation).numpy()
    angle = transformation["angle"]
    rotated = _warp(images, angle, np.ones(3), np.zeros((3, 2)))
    # OpenCV places each bilinear sample to 1/32 of a pixel.
    np.testing.assert_allclose(rotated, expected, atol=0.01)
    assert np.abs(images.numpy() - expected).max() > 0.1  # it did rotate


def test_one_resampling_is_the_rotation_then_the_crop():
    # The composed map against the two steps done by Keras' rotation and TensorFlow's
    # crop_and_resize, on smooth images, away from the zero-filled corners.
    n, size = 4, 40
    images = _smooth(n, size, size)
    layer = keras.layers.RandomRotation(0.06, fill_mode="constant")
    transformation = layer.get_random_transformation(images, training=True, seed=3)
    rotated = layer.transform_images(tf.constant(images), transformation)
    degrees = transformation["angle"]
    rng = np.random.default_rng(3)
    side = rng.uniform(0.7, 1.0, n)
    corner = rng.uniform(0, 1, (n, 2)) * (1 - side[:, None])
    boxes = np.concatenate([corner, corner + side[:, None]], axis=1).astype(np.float32)
    expected = tf.image.crop_and_resize(rotated, boxes, tf.range(n), (size, size)).numpy()
    composed = _warp(images, degrees, side, corner)
    centre = np.s_[:, 10:-10, 10:-10]
    np.testing.assert_allclose(composed[centre], expected[centre], atol=0.01)
    assert np.abs(composed - images).max() > 0.2  # it did move the pixels
    # A mask by nearest neighbour stays binary.
    masks = (images > 0.5).astype(np.float32)
    assert set(np.unique(_warp(masks, degrees, side, corner, "nearest"))) == {0.0, 1.0}


def test_warp_affine_takes_any_number_of_channels():
    images = np.random.default_rng(4).random((2, 12, 10, 6), dtype=np.float32)
    identity = np.tile(np.array([[1.0, 0, 0, 0, 1.0, 0]], np.float32), (2, 1))
    out = warp_affine(images, identity, "bilinear")
    np.testing.assert_allclose(out, images, atol=1e-6)
    shift_x = identity + np.array([0, 0, 1.0, 0, 0, 0], np.float32)
    shifted = warp_affine(images, shift_x, "nearest")  # output x reads input x + 1
    np.testing.assert_array_equal(shifted[:, :, :-1], images[:, :, 1:])
    np.testing.assert_array_equal(shifted[:, :, -1], 0.0)


def _batches(manifest, seed: int, **kwargs) -> list[np.ndarray]:
    kwargs.setdefault("augment", AugmentConfig())
    dataset = make_dataset(
        manifest,
        range(8),
        image_size=(SIZE, SIZE),
        batch_size=3,
        training=True,
        seed=seed,
        **kwargs,
    )
    return [t.numpy() for images, targets, _ in dataset for t in (images, targets["mask"])]


def test_training_dataset_repeats_for_a_seed(tiny_dataset: Path):
    manifest = read_manifest(tiny_dataset)
    first, again, other = _batches(manifest, 3), _batches(manifest, 3), _batches(manifest, 4)
    assert len(first) == 2 * 3  # one epoch: ceil(8 / 3) batches of images and masks
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_a_resumed_epoch_sees_the_batches_of_the_uninterrupted_run(tiny_dataset: Path):
    manifest = read_manifest(tiny_dataset)
    whole = _batches(manifest, 3, epochs=3)
    assert len(whole) == 3 * 2 * 3
    resumed = _batches(manifest, 3, epochs=2, first_epoch=1)
    for a, b in zip(whole[6:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], whole[6])  # each epoch has its own draws

    # ... and its own order, in which every image comes once.
    plain = _batches(manifest, 3, epochs=2, augment=AugmentConfig(enabled=False))
    sums = [np.concatenate([b.sum(axis=(1, 2, 3)) for b in plain[k : k + 6 : 2]]) for k in (0, 6)]
    np.testing.assert_allclose(sorted(sums[0]), sorted(sums[1]), rtol=1e-6)
    assert len(set(np.round(sums[0], 3))) == 8
    assert not np.allclose(sums[0], sums[1])


def test_disabled_and_invalid_settings():
    assert build_augmenter(AugmentConfig(enabled=False)) is None
    with pytest.raises(ValueError, match="Received: 'poisson'"):
        build_augmenter(AugmentConfig(noise="poisson"))
    with pytest.raises(ValueError, match=r"Received: 1\.0"):
        build_augmenter(AugmentConfig(crop=1.0))
    with pytest.raises(ValueError, match=r"horizontal_flip.*Received: 1\.5"):
        build_augmenter(AugmentConfig(horizontal_flip=1.5))


def test_horizontal_flip_mirrors_image_and_mask_together():
    """Always on, alone: the exact mirror; at 0.5 with rotation: the other draws are unchanged,
    so the images left unmirrored are those of a run without the flip."""
    rng = np.random.default_rng(0)
    masks = _shapes(8)
    images = (0.5 * masks + 0.3 * rng.random(masks.shape)).astype(np.float32)
    mirror = AugmentConfig(rotation_degrees=0, crop=0.0, horizontal_flip=1.0, **NO_INTENSITY)
    flipped_images, flipped_masks = _run(mirror, images, masks)
    np.testing.assert_allclose(flipped_images, images[:, :, ::-1], atol=1e-6)
    np.testing.assert_array_equal(flipped_masks, masks[:, :, ::-1])

    rotate = AugmentConfig(rotation_degrees=30, crop=0.2, **NO_INTENSITY)
    half = dataclasses.replace(rotate, horizontal_flip=0.5)
    plain_images, plain_masks = _run(rotate, images, masks, seed=3)
    half_images, half_masks = _run(half, images, masks, seed=3)
    same = [np.array_equal(a, b) for a, b in zip(plain_masks, half_masks, strict=True)]
    assert 0 < sum(same) < len(same)  # some mirrored, some not
    for k, unchanged in enumerate(same):
        if unchanged:
            np.testing.assert_allclose(half_images[k], plain_images[k], atol=1e-6)
        else:  # the same rotation and crop, mirrored: the mask lands mirrored
            iou = (half_masks[k] * plain_masks[k][:, ::-1]).sum() / np.maximum(
                half_masks[k], plain_masks[k][:, ::-1]
            ).sum()
            assert iou > 0.9
