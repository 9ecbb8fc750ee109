"""tf.data input: shuffle, decode, convert, resize, augment, batch, prefetch.

Each element is ``(image, targets, sample_weights)``:

- ``image``: float32 ``(batch, height, width, channels)`` in [0, 1];
- targets: for the joint model the dict ``{"mask": (batch, H, W, 1), "label": (batch, 1)}``
  keyed by the model's output names, else the mask alone;
- sample weights, same structure, ``(batch,)``: 0 where a row has no mask (its mask loss
  counts zero) or no label (its label loss counts zero), 1 otherwise.

Images are decoded by TensorFlow (PNG, JPEG, BMP, GIF; 8 or 16 bit), colour is converted to
grayscale when ``channels`` is 1, an image of another size is fitted as ``cervixnet data
prepare`` fits it (``fit_to_input``) and the mask is resized by nearest neighbour, so it stays
binary.

For training, the decoded images and masks of a small set are kept in memory
(``cache_in_memory``) and each batch is gathered from them in its epoch's order, instead of
being read and decoded anew every epoch: the batches are the same either way.

Training batches are augmented (``build_augmenter``): a random rotation and a random
crop-and-resize move the image and its mask together, in one resampling by OpenCV (the mask by
nearest neighbour, so it stays binary); brightness, contrast and Gaussian or speckle noise
change the image only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import tensorflow as tf

from cervixnet.config import AugmentConfig
from cervixnet.data.manifest import Manifest

# Independent random streams derived from the run's seed.
_TRAINING_STREAM, _COPIES_STREAM = 0, 1

# ``cache="auto"`` keeps the decoded training set in memory up to this size (float32 images
# and masks, each distinct record once).
AUTO_CACHE_BYTES = 1 << 30


def decoded_bytes(records: int, image_size: Sequence[int], channels: int) -> int:
    """Bytes of ``records`` decoded images and masks, float32 ``(H, W, channels + 1)`` each."""
    height, width = (int(s) for s in image_size)
    return records * height * width * (channels + 1) * 4


def cache_in_memory(
    cache: bool | str, records: int, image_size: Sequence[int], channels: int
) -> bool:
    """Whether training keeps its decoded images in memory: ``cache`` True, False or ``"auto"``.

    ``"auto"`` caches when the distinct ``records`` take at most ``AUTO_CACHE_BYTES`` (1 GiB)
    decoded (``decoded_bytes``); batches are gathered from the cache, without a second copy.
    """
    if cache == "auto":
        return decoded_bytes(records, image_size, channels) <= AUTO_CACHE_BYTES
    if isinstance(cache, bool):
        return cache
    raise ValueError(f"cache must be true, false or 'auto'. Received: {cache!r}")


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


def preprocess_image(
    contents: tf.Tensor, image_size: Sequence[int], channels: int, resize: str = "stretch"
) -> tf.Tensor:
    """Encoded bytes -> the network's input ``(height, width, channels)``, as prepared data.

    An image of another size is fitted with :func:`fit_to_input` (``resize``: "letterbox" or
    "stretch"; defaults to "stretch"), which resizes as ``cervixnet data prepare`` does; an
    image already at ``image_size`` (a prepared one) is used as decoded.
    """
    return fit_to_input(decode_image(contents, channels), image_size, resize)[0]


def fit_to_input(
    image: tf.Tensor, image_size: Sequence[int], mode: str = "letterbox"
) -> tuple[tf.Tensor, tf.Tensor]:
    """TensorFlow's :func:`cervixnet.data.letterbox.fit_image`, for graphs (serving, raw data).

    The geometry is ``letterbox_geometry``'s exactly (float64, round half to even) and the
    resampling is the same: area averaging when the image shrinks, bilinear when it grows, so
    an 8-bit image comes out within 1/255 of OpenCV's (``tests/test_pipeline.py``). The
    padding is 0.

    Args:
        image: float32 ``(H, W, C)``, any size.
        image_size: ``(height, width)`` of the network input.
        mode: ``"letterbox"`` or ``"stretch"``. Defaults to "letterbox".

    Returns:
        The fitted image ``(height, width, C)`` and its content box, int32 ``(4,)``:
        ``[top, left, content_height, content_width]``.
    """
    height, width = (int(s) for s in image_size)
    if mode not in ("letterbox", "stretch"):
        raise ValueError(f"`mode` must be 'letterbox' or 'stretch'. Received: mode={mode!r}")
    source = tf.cast(tf.shape(image)[:2], tf.float64)
    target = tf.constant([height, width], tf.float64)
    if mode == "stretch":
        scale = tf.sqrt(target[0] / source[0] * target[1] / source[1])
        content = tf.constant([height, width], tf.int32)
    else:
        scale = tf.reduce_min(target / source)
        content = tf.cast(tf.clip_by_value(tf.round(source * scale), 1.0, target), tf.int32)
    top, left = (height - content[0]) // 2, (width - content[1]) // 2
    resized = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == content),
        lambda: image,
        lambda: tf.cond(
            scale < 1.0,
            lambda: tf.image.resize(image, content, method="area"),
            lambda: tf.image.resize(image, content, method="bilinear"),
        ),
    )
    fitted = tf.image.pad_to_bounding_box(resized, top, left, height, width)
    fitted = tf.ensure_shape(fitted, (height, width, image.shape[-1]))
    return fitted, tf.stack([top, left, content[0], content[1]])


def decode_mask(contents: tf.Tensor, image_size: Sequence[int], classes: int = 1) -> tf.Tensor:
    """Encoded mask -> float32 ``(height, width, 1)``: for one class in {0, 1} (non-zero
    pixels are the organ), for several the class ids 0 (background) to ``classes``."""
    mask = tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False)
    mask = _at_size(tf.reduce_max(mask, axis=-1, keepdims=True), image_size, "nearest")
    return tf.cast(mask > 0 if classes == 1 else mask, tf.float32)


def _at_size(image: tf.Tensor, image_size: Sequence[int], method: str) -> tf.Tensor:
    """``image`` ``(H, W, C)`` resized to ``image_size``, or as it is if it has that size already.

    The result has a static shape ``(height, width, C)``.
    """
    height, width = (int(s) for s in image_size)
    image = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == (height, width)),
        lambda: image,
        lambda: tf.image.resize(image, (height, width), method=method),
    )
    return tf.ensure_shape(image, (height, width, image.shape[-1]))


def build_augmenter(
    config: AugmentConfig,
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None:
    """Returns ``fn(images, masks, seed) -> (images, masks)`` for batches, or ``None`` if disabled.

    ``images`` are float32 ``(batch, H, W, C)`` in [0, 1], ``masks`` float32 ``(batch, H, W, 1)``
    in {0, 1} (or class ids); both come back with the same shapes, each image with its own
    random draws:

    - rotation by an angle in ``[-rotation_degrees, +rotation_degrees]`` (default 15) about
      the centre, corners filled with 0 (the transform of ``keras.layers.RandomRotation``);
    - crop-and-resize of the rotated image: a window of side ``s * H`` by ``s * W``, ``s``
      uniform in ``[1 - crop, 1]`` (default crop 0.1; one ``s`` for both sides, so the aspect
      ratio is kept) at a uniform random position inside the image, resized back to
      ``(H, W)`` (the sampling of ``tf.image.crop_and_resize``); it only zooms in, never pads;
    - a left-right mirror of the result with probability ``horizontal_flip`` (default 0);
    - brightness shift in ``[-brightness, +brightness]`` and contrast factor in
      ``[1 - contrast, 1 + contrast]`` about each image's mean (defaults 0.1; the transforms
      of ``keras.layers.RandomBrightness`` and ``keras.layers.RandomContrast``);
    - noise ``n ~ N(0, noise_std)`` per pixel (default 0.02): ``"gaussian"`` adds it,
      ``"speckle"`` multiplies, ``image * (1 + n)``; then the image is clipped to [0, 1].

    Rotation, crop and mirror together are one affine map (``affine_transforms``), applied in a
    single resampling by OpenCV (``warp_affine``): bilinear for the image, nearest neighbour for the
    mask, so it keeps its values. The intensity transforms touch the image only. A value of 0
    turns a transform off. Every draw is stateless: ``seed`` (int64, shape ``(2,)``) alone
    decides the output, whatever TensorFlow's global seed and whatever ran before, which is
    what lets an interrupted run resume with exactly the augmentation it would have had.
    """
    if not config.enabled:
        return None
    if config.noise not in ("gaussian", "speckle"):
        raise ValueError(
            f"augment.noise must be 'gaussian' or 'speckle'. Received: {config.noise!r}"
        )
    if not 0 <= config.crop < 1:
        raise ValueError(f"augment.crop must be a fraction in [0, 1). Received: {config.crop!r}")
    if not 0 <= config.horizontal_flip <= 1:
        raise ValueError(
            "augment.horizontal_flip must be a probability in [0, 1]. "
            f"Received: {config.horizontal_flip!r}"
        )
    geometric = config.rotation_degrees > 0 or config.crop > 0 or config.horizontal_flip > 0
    pixels = functools.partial(
        _augment_pixels,
        geometric=geometric,
        brightness=config.brightness > 0,
        contrast=config.contrast > 0,
        noise_std=float(config.noise_std),
        speckle=config.noise == "speckle",
    )

    def augment(
        images: tf.Tensor, masks: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        shape, mask_shape = images.shape, masks.shape
        rotation_key, crop_key, brightness_key, contrast_key, noise_key = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
        )
        batch = tf.shape(images)[0]
        angle = tf.zeros((batch,))
        if config.rotation_degrees > 0:
            degrees = float(config.rotation_degrees)
            angle = tf.random.stateless_uniform((batch,), rotation_key, -degrees, degrees)
        side, corner = tf.ones((batch, 1)), tf.zeros((batch, 2))
        if config.crop > 0:
            # Side s, corner (y1, x1) uniform in [0, 1 - s], normalised like crop_and_resize.
            side_key, corner_key = tf.unstack(tf.random.experimental.stateless_split(crop_key))
            side = tf.random.stateless_uniform((batch, 1), side_key, 1.0 - config.crop, 1.0)
            corner = tf.random.stateless_uniform((batch, 2), corner_key) * (1.0 - side)
        per_image = (batch, 1, 1, 1)
        shift = tf.zeros(per_image)
        if config.brightness > 0:
            shift = tf.random.stateless_uniform(
                per_image, brightness_key, -config.brightness, config.brightness
            )
        factor = tf.ones(per_image)
        if config.contrast > 0:
            factor = tf.random.stateless_uniform(
                per_image, contrast_key, 1.0 - config.contrast, 1.0 + config.contrast
            )
        mirror = None
        if config.horizontal_flip > 0:
            # Its own stream, so the other draws stay those of a run without the mirror.
            flip_key = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 5)
            draw = tf.random.stateless_uniform((batch,), flip_key)
            mirror = draw < config.horizontal_flip
        transforms = affine_transforms(
            angle, side[:, 0], corner, tf.shape(images)[1:3], mirror=mirror
        )
        images, masks = tf.numpy_function(
            pixels,
            [images, masks, transforms, shift, factor, noise_key],
            [images.dtype, masks.dtype],
            stateful=False,
        )
        return tf.ensure_shape(images, shape), tf.ensure_shape(masks, mask_shape)

    return augment


def affine_transforms(
    degrees: tf.Tensor,
    side: tf.Tensor,
    corner: tf.Tensor,
    size: tf.Tensor,
    mirror: tf.Tensor | None = None,
) -> tf.Tensor:
    """Per image, the affine map of a rotation, a crop-and-resize and an optional left-right
    mirror: ``(batch, 6)``.

    ``degrees`` ``(batch,)`` rotate about the centre (the transform of
    ``keras.layers.RandomRotation``); the crop window has side ``side`` ``(batch,)`` and corner
    ``corner`` ``(batch, 2)`` as ``(y1, x1)``, both as fractions of the image, and is resized
    back to ``size`` ``(height, width)`` as ``tf.image.crop_and_resize`` samples it. A row
    ``(a0, a1, a2, b0, b1, b2)`` says that output pixel ``(x, y)`` samples the input at
    ``(a0 x + a1 y + a2, b0 x + b1 y + b2)``, pixel centres at integer coordinates (the
    convention of ``ImageProjectiveTransformV3`` and of OpenCV's ``WARP_INVERSE_MAP``).

    ``mirror`` ``(batch,)`` bool mirrors the output where true: output ``x`` then reads what
    ``last_x - x`` would have.
    """
    angle = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    side = tf.cast(side, tf.float32)
    last_y = tf.cast(size[0], tf.float32) - 1.0
    last_x = tf.cast(size[1], tf.float32) - 1.0
    cy, cx = last_y / 2.0, last_x / 2.0
    # The crop: output (x, y) reads the rotated image at (x0 + s x, y0 + s y).
    y0, x0 = corner[:, 0] * last_y, corner[:, 1] * last_x
    cos, sin = tf.cos(angle), tf.sin(angle)
    # The rotation: (u, v) in the rotated image reads the input at
    # (cos u - sin v + cx - cx cos + cy sin, sin u + cos v + cy - cx sin - cy cos).
    a0, a2 = cos * side, cos * x0 - sin * y0 + cx - cx * cos + cy * sin
    b0, b2 = sin * side, sin * x0 + cos * y0 + cy - cx * sin - cy * cos
    if mirror is not None:
        # Output x reads at last_x - x: negate the x terms and move the offsets.
        mirrored = tf.cast(mirror, tf.float32)
        a2, b2 = a2 + mirrored * a0 * last_x, b2 + mirrored * b0 * last_x
        sign = 1.0 - 2.0 * mirrored
        a0, b0 = a0 * sign, b0 * sign
    return tf.stack([a0, -sin * side, a2, b0, cos * side, b2], axis=1)


def warp_affine(images: np.ndarray, transforms: np.ndarray, interpolation: str) -> np.ndarray:
    """Resamples each image of ``(batch, H, W, C)`` by its row of ``transforms`` ``(batch, 6)``.

    OpenCV's ``warpAffine`` with ``WARP_INVERSE_MAP`` (rows as ``affine_transforms`` makes
    them), points outside the image read 0; ``interpolation`` is ``"bilinear"`` (which places
    each sample to 1/32 of a pixel) or ``"nearest"`` (masks). Returns a new array, same shape
    and dtype.
    """
    flags = cv2.WARP_INVERSE_MAP | _CV2_INTERPOLATION[interpolation]
    height, width, channels = images.shape[1:]
    out = np.empty_like(images)
    for image, matrix, target in zip(images, transforms, out, strict=True):
        matrix = np.asarray(matrix, np.float64).reshape(2, 3)
        # warpAffine takes up to 4 channels at once.
        for first in range(0, channels, 4):
            part = np.ascontiguousarray(image[..., first : first + 4])
            warped = cv2.warpAffine(
                part, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT
            )
            target[..., first : first + 4] = warped.reshape(height, width, -1)
    return out


_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def _augment_pixels(
    images: np.ndarray,
    masks: np.ndarray,
    transforms: np.ndarray,
    shift: np.ndarray,
    factor: np.ndarray,
    noise_key: np.ndarray,
    *,
    geometric: bool,
    brightness: bool,
    contrast: bool,
    noise_std: float,
    speckle: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``build_augmenter``'s pixel work on one batch, with every random draw given.

    ``shift`` and ``factor`` ``(batch, 1, 1, 1)`` are the brightness shifts and contrast
    factors, used where ``brightness`` and ``contrast`` are on; ``noise_key`` (int64 ``(2,)``)
    seeds the noise. The inputs are left as they are (they may share memory with TensorFlow's
    tensors).
    """
    if geometric:
        images = warp_affine(images, transforms, "bilinear")
        masks = warp_affine(masks, transforms, "nearest")
    dtype = images.dtype
    if brightness:
        images = np.clip(images + shift.astype(dtype), 0.0, 1.0)
    if contrast:
        mean = images.mean(axis=(1, 2), keepdims=True)
        images = np.clip((images - mean) * factor.astype(dtype) + mean, 0.0, 1.0)
    if noise_std > 0:
        entropy = [int(k) for k in np.asarray(noise_key, np.int64).view(np.uint64)]
        generator = np.random.Generator(np.random.SFC64(np.random.SeedSequence(entropy)))
        noise = generator.standard_normal(images.shape, dtype=np.float32).astype(dtype)
        noise *= dtype.type(noise_std)
        images = images * (1.0 + noise) if speckle else images + noise
    return np.clip(images, 0.0, 1.0).astype(dtype, copy=False), masks


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
    copies: Sequence[bool] | None = None,
    epochs: int = 1,
    first_epoch: int = 0,
    autotune: bool = False,
    cache: bool | str = "auto",
    classes: int = 1,
) -> tf.data.Dataset:
    """Builds the input pipeline for the records at ``indices`` of ``manifest``.

    Args:
        manifest: the parsed data set.
        indices: record positions to include (e.g. one split), in order.
        image_size: ``(height, width)`` of the network input.
        channels: 1 (grayscale) or 3.
        batch_size: images per batch; the last batch may be smaller.
        joint: yield ``{"mask", "label"}`` targets (joint model) or the mask only.
        training: shuffle every epoch and augment.
        augment: augmentation settings used when ``training``; ``None`` disables it.
        seed: seeds shuffling and augmentation.
        copies: when not ``training``, flags per index the augmented copies of the paper's
            balanced evaluation (``cervixnet.data.balance``): they get ``augment``'s
            transforms once, with ``seed``, and the result is cached so that every pass
            sees the same images; the other images stay as they are.
        epochs: when ``training``, how many epochs the dataset holds, one after the other
            (``ceil(len(indices) / batch_size)`` batches each): pass the run's epochs and
            ``steps_per_epoch`` to ``fit``.
        first_epoch: when ``training``, the number of the first of them (0-based). The order
            and augmentation of epoch ``e`` depend on ``seed`` and ``e`` only, so a run
            resumed at epoch ``e`` sees exactly the batches the uninterrupted run saw.
        autotune: let tf.data's autotuner size the parallel maps and prefetch buffers. Off
            by default: its background thread wakes on a timer whose period doubles while an
            iterator lives (10 ms, 20 ms, ... 10 s and more), and a finished iterator waits
            for that timer before it is freed, so every pass over the data could end with
            seconds of idle cores. Off, each parallel map makes as many calls at once as
            there are cores (at most 16), and prefetching still adapts its buffer.
        cache: when ``training``, decode each distinct record once and keep the decoded
            images and masks in memory (True), read and decode every epoch anew (False), or
            cache when they take at most 1 GiB (``"auto"``, the default; ``cache_in_memory``).
            The batches are the same either way; with the cache, the first batch waits until
            the whole set is decoded.
        classes: the mask's classes (``len(data.classes)``): 1, masks in {0, 1}; more,
            masks of class ids (``decode_mask``).
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

    def load_pixels(row):
        image = preprocess_image(tf.io.read_file(row["image"]), image_size, channels)
        mask = tf.cond(
            row["has_mask"] > 0,
            lambda: decode_mask(tf.io.read_file(row["mask"]), image_size, classes),
            lambda: tf.zeros((*image_size, 1), tf.float32),
        )
        return image, mask

    def load(row):
        return (*load_pixels(row), row)

    augmenter = None
    if training and augment is not None:
        augmenter = build_augmenter(augment)
    elif augment_copies:  # a copy is augmented even when training augmentation is off
        augmenter = build_augmenter(dataclasses.replace(augment, enabled=True))

    def to_targets(images, masks, row, key):
        if augmenter is not None and training:
            images, masks = augmenter(images, masks, key)
        elif augmenter is not None:
            new_images, new_masks = augmenter(images, masks, key)
            chosen = row["is_copy"][:, None, None, None] > 0
            images = tf.where(chosen, new_images, images)
            masks = tf.where(chosen, new_masks, masks)
        if not joint:
            return images, masks, row["has_mask"]
        targets = {"mask": masks, "label": row["label"][:, None]}
        weights = {"mask": row["has_mask"], "label": row["has_label"]}
        return images, targets, weights

    def batches(elements: tf.data.Dataset, key: tf.Tensor) -> tf.data.Dataset:
        """Batches ``elements``; batch ``i`` is augmented with a seed from ``key`` and ``i``."""

        def one_batch(index, element):
            images, masks, row = element
            return to_targets(images, masks, row, _fold_in(key, index))

        # Every draw is stateless, so batches can be made in parallel in a fixed order.
        return (
            elements.batch(batch_size)
            .enumerate()
            .map(one_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        )

    if training:
        if epochs < 1 or first_epoch < 0:
            raise ValueError(
                "make_dataset needs epochs >= 1 and first_epoch >= 0. "
                f"Received: epochs={epochs}, first_epoch={first_epoch}"
            )
        table = {name: tf.constant(values) for name, values in columns.items()}
        run_key = tf.constant([seed, _TRAINING_STREAM], tf.int64)
        # Oversampling repeats records: each distinct one is decoded once into the cache.
        first_row: dict[int, int] = {}  # each distinct record's first row
        for row, index in enumerate(indices):
            first_row.setdefault(index, row)

        def epoch_order(epoch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            """The epoch's full shuffle (a permutation of every record) and its batches' key."""
            order_key, batch_key = tf.unstack(
                tf.random.experimental.stateless_split(_fold_in(run_key, epoch))
            )
            return tf.argsort(tf.random.stateless_uniform((len(records),), order_key)), batch_key

        if cache_in_memory(cache, len(first_row), image_size, channels):
            slot = {index: n for n, index in enumerate(first_row)}
            source = tf.constant([slot[index] for index in indices], tf.int32)
            distinct_rows = tf.data.Dataset.from_tensor_slices(
                {
                    name: [columns[name][row] for row in first_row.values()]
                    for name in ("image", "mask", "has_mask")
                }
            )
            # One element, the whole set ((n, H, W, C) images, (n, H, W, 1) masks), decoded
            # when the first batch is asked for; cache() keeps it for every later batch.
            pixels = (
                distinct_rows.map(
                    load_pixels, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
                )
                .batch(len(first_row))
                .cache()
            )
            steps = -(-len(records) // batch_size)

            def cached_batch(number, whole_set):
                # Batch `index` of `epoch`, gathered straight from the cached set: the rows
                # the uncached input batches (below), without a copy of the set per epoch.
                epoch, index = first_epoch + number // steps, number % steps
                order, batch_key = epoch_order(epoch)
                chosen = order[index * batch_size : (index + 1) * batch_size]
                row = {name: tf.gather(values, chosen) for name, values in table.items()}
                images, masks = (tf.gather(part, tf.gather(source, chosen)) for part in whole_set)
                return to_targets(images, masks, row, _fold_in(batch_key, index))

            numbers = tf.data.Dataset.range(epochs * steps)
            dataset = tf.data.Dataset.zip(numbers, pixels.repeat()).map(
                cached_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
        else:

            def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
                order, batch_key = epoch_order(epoch)
                rows = tf.data.Dataset.from_tensor_slices(
                    {name: tf.gather(values, order) for name, values in table.items()}
                )
                loaded = rows.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                return batches(loaded, batch_key)

            # Each epoch's order and augmentation come from its own key, so that no epoch
            # depends on another's iterator state.
            epoch_numbers = tf.data.Dataset.range(first_epoch, first_epoch + epochs)
            dataset = epoch_numbers.flat_map(one_epoch)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(columns)
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache()
        dataset = batches(dataset, tf.constant([seed, _COPIES_STREAM], tf.int64))
        if augment_copies:
            dataset = dataset.cache()  # the copies are drawn once and then fixed
    options = tf.data.Options()
    options.autotune.enabled = autotune
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _fold_in(key: tf.Tensor, data: tf.Tensor | int) -> tf.Tensor:
    """A new stateless seed (int64, shape ``(2,)``) from ``key`` and the integer ``data``."""
    return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))
