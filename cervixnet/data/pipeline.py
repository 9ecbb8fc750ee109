"""tf.data input: decode, convert, resize, cache, shuffle, augment, batch, prefetch.

Each element is ``(image, targets, sample_weights)``:

- ``image``: float32 ``(batch, height, width, channels)`` in [0, 1];
- targets: for the joint model the tuple ``(mask (batch, H, W, 1), label (batch, 1))`` in
  the model's output order, else the mask alone;
- sample weights, same structure, ``(batch,)``: 0 where a row has no mask (its mask loss
  counts zero) or no label (its label loss counts zero), 1 otherwise.

Images are decoded by TensorFlow (PNG, JPEG, BMP, GIF; 8 or 16 bit), colour is converted to
grayscale when ``channels`` is 1, the image is resized bilinearly (with antialiasing) and the
mask by nearest neighbour, so a mask stays binary.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from cervixnet.config import AugmentConfig
from cervixnet.data.manifest import Manifest


def decode_image(contents: tf.Tensor, channels: int) -> tf.Tensor:
    """Encoded bytes -> float32 ``(H, W, channels)`` in [0, 1] (alpha dropped, colour converted)."""
    image = tf.io.decode_image(contents, channels=0, dtype=tf.float32, expand_animations=False)
    n = tf.shape(image)[-1]
    image = tf.cond(n == 2, lambda: image[..., :1], lambda: image)  # gray + alpha
    image = tf.cond(n >= 3, lambda: image[..., :3], lambda: image)  # drop alpha
    if channels == 1:
        image = tf.cond(
            tf.shape(image)[-1] == 3, lambda: tf.image.rgb_to_grayscale(image), lambda: image
        )
    else:
        image = tf.cond(
            tf.shape(image)[-1] == 1, lambda: tf.image.grayscale_to_rgb(image), lambda: image
        )
    image.set_shape([None, None, channels])
    return image


def preprocess_image(contents: tf.Tensor, image_size: Sequence[int], channels: int) -> tf.Tensor:
    """Encoded bytes -> the network's input ``(height, width, channels)``, as in training."""
    image = decode_image(contents, channels)
    return tf.image.resize(image, image_size, method="bilinear", antialias=True)


def decode_mask(contents: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """Encoded mask -> float32 ``(height, width, 1)`` in {0, 1}: non-zero pixels are cervix."""
    mask = tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False)
    mask = tf.reduce_max(mask, axis=-1, keepdims=True)
    mask = tf.image.resize(mask, image_size, method="nearest")
    return tf.cast(mask > 0, tf.float32)


def build_augmenter(config: AugmentConfig, seed: int):
    """Returns ``fn(images, masks) -> (images, masks)`` for batches, or ``None`` if disabled.

    Geometry (rotation, zoom) uses Keras' image layers on ``{"images", "segmentation_masks"}``
    so the mask gets the same transform with nearest interpolation; intensity changes
    (brightness, contrast, Gaussian noise) touch the image only.
    """
    if not config.enabled:
        return None
    layers = keras.layers
    geometric = []
    if config.rotation_degrees > 0:
        geometric.append(
            layers.RandomRotation(
                config.rotation_degrees / 360.0, fill_mode="constant", seed=seed, name="aug_rotate"
            )
        )
    if config.crop > 0:
        geometric.append(layers.RandomZoom((-config.crop, 0.0), seed=seed + 1, name="aug_crop"))
    intensity = []
    if config.brightness > 0:
        intensity.append(
            layers.RandomBrightness(
                config.brightness, value_range=(0.0, 1.0), seed=seed + 2, name="aug_brightness"
            )
        )
    if config.contrast > 0:
        intensity.append(
            layers.RandomContrast(
                config.contrast, value_range=(0.0, 1.0), seed=seed + 3, name="aug_contrast"
            )
        )
    noise = tf.random.Generator.from_seed(seed + 4) if config.noise_std > 0 else None

    def augment(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        for layer in geometric:
            out = layer({"images": images, "segmentation_masks": masks}, training=True)
            images, masks = out["images"], out["segmentation_masks"]
        for layer in intensity:
            images = layer(images, training=True)
        if noise is not None:
            images = images + noise.normal(tf.shape(images), stddev=config.noise_std)
        return tf.clip_by_value(images, 0.0, 1.0), tf.round(masks)

    return augment


def make_dataset(
    manifest: Manifest,
    indices: Sequence[int],
    *,
    image_size: Sequence[int],
    channels: int = 1,
    batch_size: int = 8,
    joint: bool = True,
    training: bool = False,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    shuffle_buffer: int = 1024,
) -> tf.data.Dataset:
    """Builds the input pipeline for the records at ``indices`` of ``manifest``.

    Args:
        manifest: the parsed data set.
        indices: record positions to include (e.g. one split), in order.
        image_size: ``(height, width)`` of the network input.
        channels: 1 (grayscale) or 3.
        batch_size: images per batch; the last batch may be smaller.
        joint: yield ``(mask, label)`` targets (joint model) or the mask only.
        training: shuffle every epoch and augment.
        augment: augmentation settings used when ``training``; ``None`` disables it.
        seed: seeds shuffling and augmentation.
        shuffle_buffer: shuffle buffer size in images.
    """
    records = [manifest.records[i] for i in indices]
    if not records:
        raise ValueError("make_dataset needs at least one record. Received: indices=[]")
    image_size = tuple(int(s) for s in image_size)
    columns = {
        "image": [str(r.image) for r in records],
        "mask": [str(r.mask) if r.mask else "" for r in records],
        "has_mask": [1.0 if r.mask else 0.0 for r in records],
        "label": [float(r.label) if r.label is not None else 0.0 for r in records],
        "has_label": [1.0 if r.label is not None else 0.0 for r in records],
    }
    dataset = tf.data.Dataset.from_tensor_slices(columns)

    def load(row):
        image = preprocess_image(tf.io.read_file(row["image"]), image_size, channels)
        mask = tf.cond(
            row["has_mask"] > 0,
            lambda: decode_mask(tf.io.read_file(row["mask"]), image_size),
            lambda: tf.zeros((*image_size, 1), tf.float32),
        )
        return image, mask, row

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if training:
        dataset = dataset.shuffle(
            min(shuffle_buffer, len(records)), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size)
    augmenter = build_augmenter(augment, seed) if training and augment is not None else None

    def to_targets(images, masks, row):
        if augmenter is not None:
            images, masks = augmenter(images, masks)
        if not joint:
            return images, masks, row["has_mask"]
        # Tuples in output order (mask, label): Keras matches per-output sample weights
        # to a list-output model only in this form.
        targets = (masks, row["label"][:, None])
        weights = (row["has_mask"], row["has_label"])
        return images, targets, weights

    # Sequential on purpose: random augmentation stays in a repeatable order.
    dataset = dataset.map(to_targets)
    return dataset.prefetch(tf.data.AUTOTUNE)
