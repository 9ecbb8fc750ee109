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

Training batches are augmented (``build_augmenter``): a random rotation and a random
crop-and-resize move the image and its mask together (the mask by nearest neighbour, so it
stays binary); brightness, contrast and Gaussian or speckle noise change the image only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

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


def build_augmenter(
    config: AugmentConfig, seed: int
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None:
    """Returns ``fn(images, masks) -> (images, masks)`` for batches, or ``None`` if disabled.

    ``images`` are float32 ``(batch, H, W, C)`` in [0, 1], ``masks`` float32 ``(batch, H, W, 1)``
    in {0, 1}; both come back with the same shapes, each image with its own random draws:

    - rotation by an angle in ``[-rotation_degrees, +rotation_degrees]`` (default 15) about
      the centre, corners filled with 0 (``keras.layers.RandomRotation``);
    - crop-and-resize: a window of side ``s * H`` by ``s * W``, ``s`` uniform in
      ``[1 - crop, 1]`` (default crop 0.1; one ``s`` for both sides, so the aspect ratio is
      kept) at a uniform random position inside the image, resized back to ``(H, W)``
      (``tf.image.crop_and_resize``); it only zooms in, never pads;
    - brightness shift in ``[-brightness, +brightness]`` and contrast factor in
      ``[1 - contrast, 1 + contrast]`` (defaults 0.1; ``keras.layers.RandomBrightness``,
      ``keras.layers.RandomContrast``);
    - noise ``n ~ N(0, noise_std)`` per pixel (default 0.02): ``"gaussian"`` adds it,
      ``"speckle"`` multiplies, ``image * (1 + n)``; then the image is clipped to [0, 1].

    The geometric transforms (rotation, crop) move the mask with the image, the mask by
    nearest neighbour so it stays binary; the intensity ones touch the image only. A value of
    0 turns a transform off. Every random draw comes from a generator seeded from ``seed``,
    so two augmenters built with the same seed give the same sequence of outputs, whatever
    TensorFlow's global seed.
    """
    if not config.enabled:
        return None
    if config.noise not in ("gaussian", "speckle"):
        raise ValueError(
            f"augment.noise must be 'gaussian' or 'speckle'. Received: {config.noise!r}"
        )
    if not 0 <= config.crop < 1:
        raise ValueError(f"augment.crop must be a fraction in [0, 1). Received: {config.crop!r}")
    layers = keras.layers
    rotate = None
    if config.rotation_degrees > 0:
        rotate = layers.RandomRotation(
            config.rotation_degrees / 360.0, fill_mode="constant", seed=seed, name="aug_rotate"
        )
    # Not keras.layers.RandomZoom: it zooms about the centre only (no random window position).
    # Not keras_cv's RandomCropAndResize: it draws the crop area with an op-seeded
    # tf.random.uniform, so its output depends on TensorFlow's global seed and on how it is
    # traced, and it needs the image size when built.
    crop_rng = tf.random.Generator.from_seed(seed + 1) if config.crop > 0 else None
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
    noise_rng = tf.random.Generator.from_seed(seed + 4) if config.noise_std > 0 else None
    speckle = config.noise == "speckle"

    def crop_and_resize(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.shape(images)[0]
        # Boxes in normalised [y1, x1, y2, x2]: side s, corner uniform in [0, 1 - s].
        side = crop_rng.uniform((batch, 1), 1.0 - config.crop, 1.0)
        corner = crop_rng.uniform((batch, 2)) * (1.0 - side)
        boxes = tf.concat([corner, corner + side], axis=1)
        index = tf.range(batch)
        size = tf.shape(images)[1:3]
        images = tf.image.crop_and_resize(images, boxes, index, size, method="bilinear")
        masks = tf.image.crop_and_resize(masks, boxes, index, size, method="nearest")
        return images, masks

    def augment(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shape, mask_shape = images.shape, masks.shape
        if rotate is not None:
            out = rotate({"images": images, "segmentation_masks": masks}, training=True)
            images, masks = out["images"], out["segmentation_masks"]
        if crop_rng is not None:
            images, masks = crop_and_resize(images, masks)
        for layer in intensity:
            images = layer(images, training=True)
        if noise_rng is not None:
            noise = noise_rng.normal(tf.shape(images), stddev=config.noise_std)
            images = images * (1.0 + noise) if speckle else images + noise
        images = tf.clip_by_value(images, 0.0, 1.0)
        return tf.ensure_shape(images, shape), tf.ensure_shape(masks, mask_shape)

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
    copies: Sequence[bool] | None = None,
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
        copies: when not ``training``, flags per index the augmented copies of the paper's
            balanced evaluation (``cervixnet.data.balance``): they get ``augment``'s
            transforms once, with ``seed``, and the result is cached so that every pass
            sees the same images; the other images stay as they are.
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
        "is_copy": [1.0 if c else 0.0 for c in (copies or [False] * len(records))],
    }
    if len(columns["is_copy"]) != len(records):
        raise ValueError(
            f"`copies` must flag every index. Received: {len(columns['is_copy'])} flags for "
            f"{len(records)} indices"
        )
    augment_copies = not training and augment is not None and any(columns["is_copy"])
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
    augmenter = None
    if training and augment is not None:
        augmenter = build_augmenter(augment, seed)
    elif augment_copies:  # a copy is augmented even when training augmentation is off
        augmenter = build_augmenter(dataclasses.replace(augment, enabled=True), seed)

    def to_targets(images, masks, row):
        if augmenter is not None and training:
            images, masks = augmenter(images, masks)
        elif augmenter is not None:
            new_images, new_masks = augmenter(images, masks)
            chosen = row["is_copy"][:, None, None, None] > 0
            images = tf.where(chosen, new_images, images)
            masks = tf.where(chosen, new_masks, masks)
        if not joint:
            return images, masks, row["has_mask"]
        # Tuples in output order (mask, label): Keras matches per-output sample weights
        # to a list-output model only in this form.
        targets = (masks, row["label"][:, None])
        weights = (row["has_mask"], row["has_label"])
        return images, targets, weights

    # Sequential on purpose: random augmentation stays in a repeatable order.
    dataset = dataset.map(to_targets)
    if augment_copies:
        dataset = dataset.cache()  # the copies are drawn once and then fixed
    return dataset.prefetch(tf.data.AUTOTUNE)
