from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from cervixnet.config import AugmentConfig
from cervixnet.data.letterbox import fit_image, letterbox_geometry
from cervixnet.data.manifest import read_manifest
from cervixnet.data.pipeline import (
    build_augmenter,
    cache_in_memory,
    decode_image,
    decode_mask,
    fit_to_input,
    make_dataset,
    preprocess_image,
)
from tests.conftest import rewrite_manifest


def _encode(array: np.ndarray) -> tf.Tensor:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return tf.constant(data.tobytes())


def test_batches_shapes_and_ranges(tiny_dataset: Path):
    manifest = read_manifest(tiny_dataset)
    dataset = make_dataset(manifest, range(20), image_size=(32, 40), batch_size=8, joint=True)
    batches = list(dataset)
    assert [b[0].shape[0] for b in batches] == [8, 8, 4]
    images, targets, weights = batches[0]
    assert set(targets) == set(weights) == {"mask", "label"}  # keyed by the output names
    masks, labels = targets["mask"], targets["label"]
    mask_weight, label_weight = weights["mask"], weights["label"]
    assert images.shape == (8, 32, 40, 1) and images.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    assert masks.shape == (8, 32, 40, 1)
    assert set(np.unique(masks.numpy())) == {0.0, 1.0}
    assert labels.shape == (8, 1)
    np.testing.assert_array_equal(labels.numpy()[:, 0], [r.label for r in manifest.records[:8]])
    np.testing.assert_array_equal(mask_weight.numpy(), np.ones(8))
    np.testing.assert_array_equal(label_weight.numpy(), np.ones(8))


def test_mask_only_targets_for_segmentation_models(tiny_dataset: Path):
    manifest = read_manifest(tiny_dataset)
    _images, masks, weights = next(
        iter(make_dataset(manifest, [0, 1], image_size=(16, 16), joint=False))
    )
    assert masks.shape == (2, 16, 16, 1)
    assert weights.shape == (2,)


def test_missing_mask_or_label_gets_zero_weight(tiny_dataset: Path):
    def edit(fields, rows):
        rows[0]["mask"] = ""
        rows[1]["label"] = ""
        return fields, rows

    rewrite_manifest(tiny_dataset / "manifest.csv", edit)
    manifest = read_manifest(tiny_dataset)
    _, targets, weights = next(iter(make_dataset(manifest, [0, 1, 2], image_size=(16, 16))))
    masks, mask_weight, label_weight = targets["mask"], weights["mask"], weights["label"]
    np.testing.assert_array_equal(mask_weight.numpy(), [0, 1, 1])
    np.testing.assert_array_equal(label_weight.numpy(), [1, 0, 1])
    assert float(tf.reduce_max(masks[0])) == 0.0


def test_colour_becomes_gray_with_luma_weights():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255  # pure red
    gray = decode_image(_encode(bgr), channels=1).numpy()
    assert gray.shape == (4, 4, 1)
    np.testing.assert_allclose(gray, 0.2989, atol=0.01)  # ITU-R 601 luma of red
    rgb = decode_image(_encode(bgr), channels=3).numpy()
    np.testing.assert_allclose(rgb[0, 0], [1.0, 0.0, 0.0], atol=1e-6)


def test_16_bit_images_are_scaled_to_unit_range():
    image = np.full((4, 4), 65535 // 2, np.uint16)
    decoded = decode_image(_encode(image), channels=1).numpy()
    np.testing.assert_allclose(decoded, 0.5, atol=1e-3)


def test_mask_resize_is_nearest_and_binary():
    mask = np.zeros((30, 30), np.uint8)
    mask[5:20, 5:20] = 128  # any non-zero value is cervix
    resized = decode_mask(_encode(mask), (17, 13)).numpy()
    assert set(np.unique(resized)) == {0.0, 1.0}
    assert resized.shape == (17, 13, 1)


def test_augmentation_moves_mask_with_image():
    # The image is the mask itself: after rotation and zoom both must still coincide.
    mask = np.zeros((4, 32, 32, 1), np.float32)
    mask[:, 8:24, 4:20] = 1.0
    augment = build_augmenter(
        AugmentConfig(rotation_degrees=30, crop=0.2, brightness=0, contrast=0, noise_std=0)
    )
    images, masks = augment(tf.constant(mask), tf.constant(mask), tf.constant([1, 0], tf.int64))
    images, masks = images.numpy(), masks.numpy()
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert not np.array_equal(masks, mask)  # something moved
    agreement = np.mean((images > 0.5) == (masks > 0.5))
    assert agreement > 0.97


def test_intensity_augmentation_leaves_mask_alone():
    images = np.full((2, 16, 16, 1), 0.5, np.float32)
    masks = np.zeros((2, 16, 16, 1), np.float32)
    masks[:, 4:8] = 1.0
    augment = build_augmenter(
        AugmentConfig(rotation_degrees=0, crop=0, brightness=0.2, contrast=0.2, noise_std=0.05),
    )
    new_images, new_masks = augment(
        tf.constant(images), tf.constant(masks), tf.constant([0, 0], tf.int64)
    )
    np.testing.assert_array_equal(new_masks.numpy(), masks)
    assert not np.allclose(new_images.numpy(), images)
    assert float(tf.reduce_min(new_images)) >= 0.0 and float(tf.reduce_max(new_images)) <= 1.0


def test_disabled_augmentation_and_empty_selection(tiny_dataset: Path):
    assert build_augmenter(AugmentConfig(enabled=False)) is None
    with pytest.raises(ValueError, match="at least one record"):
        make_dataset(read_manifest(tiny_dataset), [], image_size=(16, 16))


def test_copies_are_augmented_once_and_originals_left_alone(tiny_dataset: Path):
    manifest = read_manifest(tiny_dataset)
    augment = AugmentConfig(rotation_degrees=30, crop=0.2, brightness=0.2, contrast=0, noise_std=0)
    dataset = make_dataset(
        manifest,
        [0, 1, 0, 1],
        image_size=(32, 32),
        batch_size=4,
        augment=augment,
        copies=[False, False, True, True],
        seed=2,
    )
    plain = make_dataset(manifest, [0, 1], image_size=(32, 32), batch_size=4)
    (first,) = [b[0].numpy() for b in dataset]  # one whole pass fills the cache
    (again,) = [b[0].numpy() for b in dataset]
    (originals,) = [b[0].numpy() for b in plain]
    np.testing.assert_array_equal(first, again)  # the copies are fixed across passes
    np.testing.assert_array_equal(first[:2], originals)
    assert not np.allclose(first[2:], originals)


def test_copies_must_flag_every_index(tiny_dataset: Path):
    with pytest.raises(ValueError, match="2 flags for 3 indices"):
        make_dataset(read_manifest(tiny_dataset), [0, 1, 2], image_size=(8, 8), copies=[1, 0])


@pytest.mark.parametrize("training", [False, True])
def test_autotuner_is_off_unless_asked_and_changes_no_batch(tiny_dataset: Path, training: bool):
    manifest = read_manifest(tiny_dataset)
    kwargs = {"image_size": (16, 16), "batch_size": 4, "training": training, "seed": 3}
    if training:
        kwargs["augment"] = AugmentConfig()
    plain = make_dataset(manifest, range(10), **kwargs)
    tuned = make_dataset(manifest, range(10), autotune=True, **kwargs)
    assert plain.options().autotune.enabled is False
    assert tuned.options().autotune.enabled is True
    for (images, targets, _), (same_images, same_targets, _) in zip(plain, tuned, strict=True):
        np.testing.assert_array_equal(images.numpy(), same_images.numpy())
        np.testing.assert_array_equal(targets["mask"].numpy(), same_targets["mask"].numpy())


def test_an_image_at_the_network_size_is_used_as_decoded():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 20), dtype=np.uint8)
    decoded = decode_image(_encode(pixels), 1)
    same = preprocess_image(_encode(pixels), (24, 20), 1)
    assert same.shape == (24, 20, 1)
    np.testing.assert_array_equal(same.numpy(), decoded.numpy())
    smaller = preprocess_image(_encode(pixels), (12, 10), 1)
    expected = tf.image.resize(decoded, (12, 10), method="area")  # shrinking, as OpenCV
    assert smaller.shape == (12, 10, 1)
    np.testing.assert_allclose(smaller.numpy(), expected.numpy(), atol=1e-6)
    mask = decode_mask(_encode((pixels > 128).astype(np.uint8) * 255), (24, 20))
    assert mask.shape == (24, 20, 1)
    np.testing.assert_array_equal(mask.numpy()[..., 0], (pixels > 128).astype(np.float32))


def _training_input(manifest, cache, indices=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 3, 3)):
    """Three epochs (from the second) of an oversampled training input, augmented."""
    return make_dataset(
        manifest,
        list(indices),
        image_size=(24, 20),
        batch_size=4,
        training=True,
        augment=AugmentConfig(),
        seed=5,
        epochs=3,
        first_epoch=1,
        cache=cache,
    )


def test_cached_training_input_gives_the_same_batches(tiny_dataset: Path):
    manifest = read_manifest(tiny_dataset)
    cached = list(_training_input(manifest, cache=True))
    decoded = list(_training_input(manifest, cache=False))
    assert len(cached) == len(decoded) == 3 * 4
    for batch, same in zip(cached, decoded, strict=True):
        for tensor, same_tensor in zip(tf.nest.flatten(batch), tf.nest.flatten(same), strict=True):
            np.testing.assert_array_equal(tensor.numpy(), same_tensor.numpy())


@pytest.mark.parametrize("cache", [True, False])
def test_cached_training_input_reads_each_image_once(tiny_dataset: Path, cache: bool):
    manifest = read_manifest(tiny_dataset)
    batches = iter(_training_input(manifest, cache=cache))
    next(batches)
    for record in manifest.records[:10]:  # test data: gone after the first batch
        record.image.unlink()
    if cache:
        assert len(list(batches)) == 3 * 4 - 1
    else:
        with pytest.raises(tf.errors.NotFoundError):
            list(batches)


def test_auto_cache_keeps_up_to_a_gibibyte():
    per_record = 256 * 256 * 2 * 4  # float32 image and mask
    assert per_record * 2048 == 1 << 30
    assert cache_in_memory("auto", 2048, (256, 256), 1)
    assert not cache_in_memory("auto", 2049, (256, 256), 1)
    assert cache_in_memory("auto", 1024, (256, 256), 3)  # 3 channels and the mask
    assert not cache_in_memory("auto", 1025, (256, 256), 3)
    assert cache_in_memory(True, 10**6, (256, 256), 1)
    assert not cache_in_memory(False, 1, (8, 8), 1)
    with pytest.raises(ValueError, match="Received: 'disk'"):
        cache_in_memory("disk", 1, (8, 8), 1)


@pytest.mark.parametrize(
    "source",
    [(50, 70), (70, 50), (33, 32), (32, 32), (7, 200), (200, 7), (65, 95), (96, 64), (3, 3)],
)
def test_fit_to_input_places_the_image_as_letterbox_geometry_says(source):
    """The graph's letterbox (serving) puts the content where the NumPy one does."""
    target = (32, 48)
    rng = np.random.default_rng(sum(source))
    image = rng.uniform(0.2, 1.0, (*source, 1)).astype(np.float32)
    fitted, box = fit_to_input(tf.constant(image), target)
    geometry = letterbox_geometry(source, target)
    assert box.numpy().tolist() == [geometry.top, geometry.left, *geometry.content_size]
    (ch, cw), top, left = geometry.content_size, geometry.top, geometry.left
    fitted = fitted.numpy()
    assert fitted.shape == (*target, 1)
    inside = np.zeros(target, bool)
    inside[top : top + ch, left : left + cw] = True
    assert (fitted[~inside] == 0).all() and (fitted[inside] > 0.1).all()


def _scan_texture(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 ``(height, width)``: speckle-like noise over a bright blob, as in an ultrasound."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width] / max(height, width)
    blob = 160 * np.exp(-((y - 0.4) ** 2 + (x - 0.5) ** 2) / 0.05)
    speckle = cv2.GaussianBlur(rng.gamma(1.5, 25, (height, width)), (0, 0), 1.2)
    return np.clip(blob + speckle, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "source", [(540, 800), (336, 544), (768, 1024), (480, 640), (600, 800), (90, 100)]
)
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_prepare_predict_and_the_graph_resize_alike(source, mode, tmp_path):
    """One preprocessing path: ``data prepare`` and ``predict`` (OpenCV, one function) and the
    exported graph and raw-data input (TensorFlow) give the same network input within 1/255,
    on scans of real-world sizes, shrunk and enlarged."""
    from cervixnet.config import load_config
    from cervixnet.inference import prepare_images

    target = (128, 192) if source != (90, 100) else (128, 160)
    scan = _scan_texture(*source, seed=source[0])
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), scan)
    prepared = fit_image(scan, target, mode).astype(np.float32) / 255
    config = load_config(overrides={"data.image_size": list(target), "data.resize": mode})
    predicted = prepare_images([path], config).inputs[0, ..., 0]
    np.testing.assert_array_equal(predicted, prepared)
    graph = preprocess_image(tf.io.read_file(str(path)), target, 1, mode).numpy()[..., 0]
    assert np.abs(graph - prepared).max() <= 1 / 255


def test_fit_to_input_stretches_on_request():
    image = tf.constant(np.ones((50, 70, 1), np.float32))
    fitted, box = fit_to_input(image, (32, 48), "stretch")
    assert box.numpy().tolist() == [0, 0, 32, 48] and fitted.shape == (32, 48, 1)
    with pytest.raises(ValueError, match="Received: mode='squash'"):
        fit_to_input(image, (32, 48), "squash")
