"""A trained model, or a fold ensemble, as a TensorFlow SavedModel for TF Serving.

:func:`export_savedmodel` writes ``BASE/<version>/`` (the layout TF Serving watches: one
integer folder per version) holding ``saved_model.pb``, ``variables/`` and
``assets.extra/cervixnet.json`` (what the model is, how inputs must be prepared, its threshold,
the versions that made it and the training data it saw; read it with
:func:`read_export_metadata`). The graph holds TensorFlow ops only: it loads with
``tf.saved_model.load`` (or TF Serving) in a process that has no cervixnet.

The graph predicts as ``cervixnet predict`` does: a run folder's model, or every fold model of
a ``cervixnet train --folds`` folder, each on the image and (where the run was scored with
``evaluation.tta``) on its left-right mirror, flipped back; the members' probabilities are
averaged. For a model of input size ``(H, W, C)`` and M members:

``serving_default``
    input ``images``: float32 ``(N, H, W, C)`` in [0, 1], prepared as training images were
    (``cervixnet.inference.prepare_images``); outputs ``mask``: float32 ``(N, H, W, 1)``
    probabilities, ``uncertainty``: float32 ``(N, H, W, 1)``, the members' per-pixel
    standard deviation, and for the joint model ``probability``: float32 ``(N,)`` p(preterm)
    and ``label``: int32 ``(N,)``, 1 where ``probability >= threshold`` (the run's operating
    point, the mean of the folds' for an ensemble, 0.5 when there is none). A model of K
    classes (``data.classes``) gives ``mask`` and ``uncertainty`` ``(N, H, W, K + 1)``
    instead, softmax probabilities of the background and each class, named in order by the
    metadata's ``classes``; every mask output below gains that last axis alike.

``members``
    input ``images`` as above; outputs ``masks`` float32 ``(N, M, H, W)`` and, for the joint
    model, ``probabilities`` float32 ``(N, M)``: each member's own prediction.

``predict_image_bytes``
    input ``image_bytes``: string ``(N,)``, encoded PNG, JPEG, BMP or GIF images of any size,
    8 or 16 bit, gray, colour or with alpha (TF Serving's REST API takes ``{"b64": ...}``).
    Each is decoded and converted by the training input pipeline's code
    (``cervixnet.data.pipeline.decode_image``) and fitted into the input as the run's
    ``data.resize`` says (``fit_to_input``: letterboxed, one scale and zero padding, or
    stretched). Outputs: ``mask`` and ``uncertainty`` float32 ``(N, mask_h, mask_w, 1)``
    covering the whole decoded image (the content box, resized bilinearly to ``mask_size``),
    ``original_height`` and ``original_width`` int32 ``(N,)``, and for the joint model
    ``probability`` and ``label`` as above. Bytes that are not an image make the call fail
    with ``InvalidArgumentError``; the model keeps serving.

Caliper removal (Telea inpainting, OpenCV) is not in the graph: clients remove calipers with
``cervixnet.data.calipers.remove_calipers`` (or prepare whole files with
``cervixnet.inference.prepare_images`` and call ``serving_default``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

import cervixnet
from cervixnet import models, run_folder
from cervixnet.config import ARCHITECTURES, Config
from cervixnet.data.letterbox import letterbox_geometry
from cervixnet.data.pipeline import decode_image, fit_to_input, preprocess_image
from cervixnet.ensemble import predict_members
from cervixnet.errors import CervixnetError, ConfigError
from cervixnet.evaluation import model_run
from cervixnet.export_metadata import (
    METADATA_FOLDER,
    METADATA_FORMAT,
    METADATA_NAME,
    export_versions,
)
from cervixnet.export_metadata import read_export_metadata as read_export_metadata
from cervixnet.inference import LoadedEnsemble, LoadedModel, load_ensemble, mask_class_names

# Largest absolute difference allowed between the reloaded SavedModel and the Keras model, on
# mask and label probabilities in [0, 1] (float32 rounding is ~1e-7 on CPU).
VERIFY_TOLERANCE = 1e-5


class ExportVerificationError(CervixnetError):
    """The reloaded SavedModel does not reproduce the Keras model within the tolerance."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export_savedmodel` wrote.

    Attributes:
        path: the version folder ``BASE/<version>``.
        version: its integer version.
        signatures: signature name -> ``{"inputs": {...}, "outputs": {...}}``, each tensor as
            ``{"dtype": "float32", "shape": [None, 96, 96, 1]}``.
        metadata: the content of ``assets.extra/cervixnet.json``.
        max_abs_diff: the largest difference verification found; ``None`` if not verified.
    """

    path: Path
    version: int
    signatures: dict[str, dict[str, Any]]
    metadata: dict[str, Any]
    max_abs_diff: float | None


@dataclasses.dataclass(frozen=True)
class _Spec:
    height: int
    width: int
    channels: int
    mask_size: tuple[int, int]
    joint: bool
    threshold: float
    resize: str  # how predict_image_bytes fits an image into the input: letterbox or stretch
    horizontal_flip: bool  # test-time augmentation in the graph
    models: int  # fold models averaged in the graph
    classes: tuple[str, ...] = ("cervix",)  # the mask's classes; several: a softmax over K + 1

    @property
    def mask_channels(self) -> int:
        """Channels of the mask outputs: 1 for one class, K + 1 for K."""
        return 1 if len(self.classes) == 1 else len(self.classes) + 1

    @property
    def members(self) -> int:
        """Predictions averaged per image: each model, plain and (with TTA) flipped."""
        return self.models * (2 if self.horizontal_flip else 1)


def export_savedmodel(
    model_path: str | Path,
    base_dir: str | Path,
    *,
    version: int | None = None,
    mask_size: int | Sequence[int] | None = None,
    verify: bool = True,
    tolerance: float = VERIFY_TOLERANCE,
    unsafe: bool = False,
    fold_batch_norms: bool = True,
) -> ExportResult:
    """Exports a run folder, a ``--folds`` folder (every fold model, averaged in the graph) or
    a ``.keras`` file as SavedModel version ``base_dir/<version>``.

    The SavedModel is written to a hidden staging folder in ``base_dir``, verified, and only
    then renamed to its version folder, so TF Serving never sees a half-written or failed
    version.

    Args:
        model_path: a run folder (``model.keras``, ``config.yaml``, ``operating_point.json``),
            a ``cervixnet train --folds`` folder, or a ``.keras`` file (then the threshold is
            0.5 and the default config's ``data.resize`` and ``evaluation.tta`` apply).
        base_dir: the model's base folder, created if absent.
        version: the version folder's number; default 1 + the highest integer folder in
            ``base_dir``, or 1.
        mask_size: ``(height, width)`` (or one int for a square) of the ``mask`` output of
            ``predict_image_bytes``; default the model's input size.
        verify: reload the SavedModel with ``tf.saved_model.load`` and check every signature
            against the Keras models, averaged by ``cervixnet.ensemble.predict_members``, on
            synthetic images (random and structured; PNGs at the model size, where the
            in-graph fitting is the identity, and one of another size and aspect checked
            against ``preprocess_image`` + Keras + the letterbox's content box).
        tolerance: largest absolute difference allowed on mask and label probabilities;
            default ``VERIFY_TOLERANCE`` (1e-5).
        unsafe: load a ``.keras`` file that holds Python code (a ``Lambda`` layer) and run
            it; refused by default (``cervixnet.model_file``).
        fold_batch_norms: serve the model with each float32 batch norm folded into the
            convolution before it (``cervixnet.models.fold_batch_norms``; the same function
            to round-off, and verification compares it with the unfolded Keras model);
            default true.

    Raises:
        UnsafeModelError: the model file holds Python code and ``unsafe`` is false.
        ConfigError: no model at ``model_path``, a model without a ``mask`` output, a
            ``config.yaml`` whose image size or channels differ from the model's input, a bad
            ``version`` or ``mask_size``, or a version folder that already exists.
        ExportVerificationError: verification found a difference above ``tolerance``
            (nothing is left in ``base_dir``).
    """
    base_dir = Path(base_dir)
    if base_dir.exists() and not base_dir.is_dir():
        raise ConfigError(f"{base_dir}: the export base folder is a file, not a folder")
    version = _choose_version(base_dir, version)
    final = base_dir / str(version)
    if os.path.lexists(final):  # a dangling symbolic link counts: nothing is written through it
        raise ConfigError(
            f"{final}: version {version} already exists; choose another version (or none, "
            "for the next free one) so that no exported model is overwritten"
        )
    ensemble = load_ensemble(model_path, unsafe=unsafe)
    spec = _spec(ensemble, model_path, mask_size)
    # A mixed-precision model is served in float32.
    members = [models.float32_copy(member.model) for member in ensemble.members]
    folded = sum(len(models.foldable_pairs(m)) for m in members) if fold_batch_norms else 0
    served = [models.fold_batch_norms(m) for m in members] if folded else members
    archive, functions = _build_archive(served, spec)
    signatures = {name: _describe(fn) for name, fn in functions.items()}

    base_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=base_dir))
    try:
        archive.write_out(str(staging), verbose=False)
        max_diff = None
        if verify:
            max_diff = _verify(staging, members, spec, tolerance)
        metadata = _metadata(ensemble, model_path, spec, signatures, max_diff, tolerance, folded)
        metadata = json.loads(json.dumps(metadata))  # as read back: lists, not tuples
        (staging / METADATA_FOLDER).mkdir(exist_ok=True)
        (staging / METADATA_FOLDER / METADATA_NAME).write_text(
            json.dumps(metadata, indent=2), encoding="utf-8"
        )
        if os.path.lexists(final):
            raise ConfigError(f"{final}: version {version} appeared while exporting")
        os.rename(staging, final)
    except ExportVerificationError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportVerificationError(
            f"{model_path}: {error}; version {version} was not written to {base_dir}"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(final, version, signatures, metadata, max_diff)


def _choose_version(base_dir: Path, version: int | None) -> int:
    if version is None:
        return max(export_versions(base_dir), default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 1:
        raise ConfigError(f"version must be a positive integer. Received: version={version!r}")
    return int(version)


def _spec(ensemble: LoadedEnsemble, model_path: str | Path, mask_size: Any) -> _Spec:
    model, config = ensemble.members[0].model, ensemble.config
    names = list(model.output_names)
    if "mask" not in names or len(names) > 2 or (len(names) == 2 and "label" not in names):
        raise ConfigError(
            f"{model_path}: expected a cervixnet model with outputs ['mask'] or "
            f"['mask', 'label']. Received outputs: {names}"
        )
    height, width, channels = model.inputs[0].shape[1:]
    expected = (*config.data.image_size, config.data.channels)
    height, width, channels = (
        int(given if given is not None else default)
        for given, default in zip((height, width, channels), expected, strict=True)
    )
    if (height, width, channels) != expected:
        raise ConfigError(
            f"{model_path}: config.yaml says data.image_size {list(expected[:2])}, "
            f"data.channels {expected[2]}, but the model's input is {[height, width, channels]}"
        )
    if mask_size is None:
        mask_size = (height, width)
    elif isinstance(mask_size, int | np.integer) and not isinstance(mask_size, bool):
        mask_size = (int(mask_size), int(mask_size))
    if (
        not isinstance(mask_size, Sequence)
        or len(mask_size) != 2
        or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in mask_size)
        or min(mask_size) < 1
    ):
        raise ConfigError(
            f"mask_size must be (height, width), two positive integers. Received: {mask_size!r}"
        )
    return _Spec(
        height,
        width,
        channels,
        (int(mask_size[0]), int(mask_size[1])),
        joint="label" in names,
        threshold=float(ensemble.threshold),
        resize=config.data.resize,
        horizontal_flip=bool(config.evaluation.tta),
        models=len(ensemble.members),
        classes=mask_class_names(config, _mask_classes(model)),
    )


def _channel_names(spec: _Spec) -> list[str]:
    """The mask's channels in order: the one class (a probability), or a softmax's, the
    background first."""
    return list(spec.classes) if spec.mask_channels == 1 else ["background", *spec.classes]


def _mask_classes(model: keras.Model) -> int:
    """The foreground classes of the model's mask: 1 for one channel, K for K + 1."""
    channels = int(model.outputs[model.output_names.index("mask")].shape[-1])
    return 1 if channels == 1 else channels - 1


def _build_archive(
    served: Sequence[keras.Model], spec: _Spec
) -> tuple[keras.export.ExportArchive, dict[str, Any]]:
    size = (spec.height, spec.width)
    threshold = tf.constant(spec.threshold, tf.float32)
    flips = (False, True) if spec.horizontal_flip else (False,)

    def members(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Masks ``(M, N, H, W, 1)`` (``K + 1`` channels for K classes) and label
        probabilities ``(M, N)`` (or None), in the order of
        ``cervixnet.ensemble.predict_members``: model by model, plain then flipped."""
        masks, probabilities = [], []
        for model in served:
            for flip in flips:
                result = model(tf.reverse(images, axis=[2]) if flip else images, training=False)
                named = models.named_outputs(model, result)
                mask = tf.cast(named["mask"], tf.float32)
                masks.append(tf.reverse(mask, axis=[2]) if flip else mask)
                if spec.joint:
                    probabilities.append(tf.cast(named["label"], tf.float32)[:, 0])
        return tf.stack(masks), tf.stack(probabilities) if spec.joint else None

    def outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
        masks, probabilities = members(images)
        out = {
            "mask": tf.reduce_mean(masks, axis=0),
            "uncertainty": tf.math.reduce_std(masks, axis=0),
        }
        if spec.joint:
            probability = tf.reduce_mean(probabilities, axis=0)
            out["probability"] = probability
            out["label"] = tf.cast(probability >= threshold, tf.int32)
        return out

    def serving_default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(images)

    def each_member(images: tf.Tensor) -> dict[str, tf.Tensor]:
        masks, probabilities = members(images)
        if spec.mask_channels == 1:
            out = {"masks": tf.transpose(masks[..., 0], [1, 0, 2, 3])}  # (N, M, H, W)
        else:
            out = {"masks": tf.transpose(masks, [1, 0, 2, 3, 4])}  # (N, M, H, W, K + 1)
        if spec.joint:
            out["probabilities"] = tf.transpose(probabilities)  # (N, M)
        return out

    def predict_image_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        def fit(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            # decode_image + fit_to_input is pipeline.preprocess_image, decoding once to keep
            # the size; verification checks it against preprocess_image itself.
            image = decode_image(contents, spec.channels)
            fitted, box = fit_to_input(image, size, spec.resize)
            return fitted, tf.shape(image)[:2], box

        images, sizes, boxes = tf.map_fn(
            fit,
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec((*size, spec.channels), tf.float32),
                tf.TensorSpec((2,), tf.int32),
                tf.TensorSpec((4,), tf.int32),
            ),
        )
        out = outputs(images)

        def unfit(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            """The content box of one ``(H, W, 2C)`` map, bilinearly resized to mask_size."""
            maps, box = args
            content = maps[box[0] : box[0] + box[2], box[1] : box[1] + box[3]]
            return tf.cond(
                tf.reduce_all(tf.shape(content)[:2] == spec.mask_size),
                lambda: content,
                lambda: tf.image.resize(content, spec.mask_size, method="bilinear"),
            )

        channels = spec.mask_channels
        maps = tf.concat([out["mask"], out["uncertainty"]], axis=-1)
        maps = tf.map_fn(
            unfit,
            (maps, boxes),
            fn_output_signature=tf.TensorSpec((*spec.mask_size, 2 * channels)),
        )
        out["mask"], out["uncertainty"] = maps[..., :channels], maps[..., channels:]
        out["original_height"] = sizes[:, 0]
        out["original_width"] = sizes[:, 1]
        return out

    archive = keras.export.ExportArchive()
    for model in served:
        archive.track(model)
    images_spec = tf.TensorSpec((None, *size, spec.channels), tf.float32, name="images")
    functions = {
        "serving_default": archive.add_endpoint("serving_default", serving_default, [images_spec]),
        "members": archive.add_endpoint("members", each_member, [images_spec]),
        "predict_image_bytes": archive.add_endpoint(
            "predict_image_bytes",
            predict_image_bytes,
            [tf.TensorSpec((None,), tf.string, name="image_bytes")],
        ),
    }
    return archive, functions


def _describe(function: Any) -> dict[str, Any]:
    concrete = function.get_concrete_function()
    args, kwargs = concrete.structured_input_signature
    inputs = [*args, *kwargs.values()]

    def tensor(t: Any) -> dict[str, Any]:
        return {"dtype": t.dtype.name, "shape": t.shape.as_list()}

    return {
        "inputs": {spec.name: tensor(spec) for spec in inputs},
        "outputs": {name: tensor(t) for name, t in sorted(concrete.structured_outputs.items())},
    }


def _test_images(spec: _Spec) -> np.ndarray:
    """float32 ``(3, H, W, C)`` in [0, 1]: two uniform random images and an ellipse on noise."""
    rng = np.random.default_rng(0)
    height, width = spec.height, spec.width
    random = rng.random((2, height, width, 1), dtype=np.float32)
    y, x = np.mgrid[:height, :width].astype(np.float32)
    ellipse = ((y - height / 2) / (height / 4)) ** 2 + ((x - width / 2) / (width / 3)) ** 2 <= 1
    structured = 0.25 * rng.random((height, width), dtype=np.float32) + 0.1 * y / height
    structured = np.where(ellipse, 0.6 + 0.3 * structured, structured)[None, ..., None]
    images = np.concatenate([random, structured.astype(np.float32)])
    return np.repeat(images, spec.channels, axis=-1) if spec.channels == 3 else images


def _keras_outputs(model: keras.Model, images: np.ndarray, spec: _Spec) -> dict[str, np.ndarray]:
    result = models.named_outputs(model, model(images, training=False))
    named = {k: np.asarray(v, np.float32) for k, v in result.items()}
    out = {"mask": named["mask"]}
    if spec.joint:
        out["probability"] = named["label"][:, 0]
    return out


def _ensemble_outputs(
    members: Sequence[keras.Model], images: np.ndarray, spec: _Spec
) -> dict[str, np.ndarray]:
    """What the graph must give, from the Keras models through ``cervixnet.ensemble``."""
    predicted = predict_members(
        [model_run(m) for m in members], images, horizontal_flip=spec.horizontal_flip,
        batch_size=len(images),
    )  # fmt: skip
    mean, spread = predicted.mean_mask(), predicted.std_mask()
    out = {
        "mask": mean[..., None] if spec.mask_channels == 1 else mean,
        "uncertainty": spread[..., None] if spec.mask_channels == 1 else spread,
    }
    if spec.joint:
        out["probability"] = predicted.mean_probability()
    return out


def _unfit(maps: np.ndarray, sizes: Sequence[tuple[int, int]], spec: _Spec) -> np.ndarray:
    """Maps ``(N, H, W, C)`` at the input size -> the whole source image at ``mask_size``: the
    content box of ``cervixnet.data.letterbox`` resized with OpenCV (as ``unfit_probabilities``
    does to the source size)."""
    out = []
    for values, source in zip(maps, sizes, strict=True):
        box = letterbox_geometry(source, (spec.height, spec.width), spec.resize)
        (ch, cw), (mh, mw) = box.content_size, spec.mask_size
        content = np.ascontiguousarray(values[box.top : box.top + ch, box.left : box.left + cw])
        if (ch, cw) != (mh, mw):
            content = cv2.resize(content, (mw, mh), interpolation=cv2.INTER_LINEAR)
        out.append(content.reshape(mh, mw, -1))  # OpenCV drops a single channel
    return np.stack(out)


def _verify(path: Path, members: Sequence[keras.Model], spec: _Spec, tolerance: float) -> float:
    """Largest difference between the reloaded signatures and the Keras models (module doc)."""
    reloaded = tf.saved_model.load(str(path))
    images = _test_images(spec)
    differences: dict[str, float] = {}

    def compare(name: str, got: dict[str, tf.Tensor], want: dict[str, np.ndarray]) -> None:
        for key, expected in want.items():
            value = got[key].numpy()
            if value.shape != expected.shape:
                raise ExportVerificationError(
                    f"{name}: output {key!r} has shape {value.shape}, expected {expected.shape}"
                )
            differences[f"{name}/{key}"] = float(np.max(np.abs(value - expected), initial=0.0))
        if spec.joint and "label" in got:
            probability = got["probability"].numpy()
            labels = (probability >= np.float32(spec.threshold)).astype(np.int32)
            if not np.array_equal(got["label"].numpy(), labels):
                raise ExportVerificationError(
                    f"{name}: label {got['label'].numpy().tolist()} is not probability >= "
                    f"{spec.threshold} for probabilities {probability.tolist()}"
                )

    want = _ensemble_outputs(members, images, spec)
    compare("serving_default", reloaded.signatures["serving_default"](images=images), want)
    predicted = predict_members(
        [model_run(m) for m in members], images, horizontal_flip=spec.horizontal_flip
    )
    each = {"masks": np.moveaxis(predicted.masks, 0, 1)}
    if spec.joint:
        each["probabilities"] = np.moveaxis(predicted.probabilities, 0, 1)
    compare("members", reloaded.signatures["members"](images=images), each)

    # PNGs at the model's size: decoded and fitted in the graph, the identity up to rounding.
    quantised = np.round(images * 255).astype(np.uint8)
    pngs = [tf.io.encode_png(image).numpy() for image in quantised]
    # One image at another shape (larger, so the area averaging counts, and of another aspect,
    # so a letterbox pads it), in the other colour mode, against preprocess_image + Keras.
    odd = np.repeat(quantised[-1, :, :, :1], 2, axis=0)[:-3]
    odd = np.concatenate([odd, odd[:, :7]], axis=1)  # (2H - 3, W + 7)
    odd = np.repeat(odd, 3, axis=-1) if spec.channels == 1 else odd
    pngs.append(tf.io.encode_png(odd).numpy())
    size = (spec.height, spec.width)
    reference = preprocess_image(tf.constant(pngs[-1]), size, spec.channels, spec.resize)
    prepared = np.concatenate([quantised.astype(np.float32) / 255, reference.numpy()[None]])
    sizes = [size] * len(quantised) + [odd.shape[:2]]
    want = _ensemble_outputs(members, prepared, spec)
    want["mask"] = _unfit(want["mask"], sizes, spec)
    want["uncertainty"] = _unfit(want["uncertainty"], sizes, spec)
    got = reloaded.signatures["predict_image_bytes"](image_bytes=tf.constant(pngs))
    compare("predict_image_bytes", got, want)
    found = np.stack([got["original_height"].numpy(), got["original_width"].numpy()], axis=1)
    if found.tolist() != [list(s) for s in sizes]:
        raise ExportVerificationError(
            f"predict_image_bytes: original sizes {found.tolist()}, expected {sizes}"
        )
    worst = max(differences, key=differences.__getitem__)
    if differences[worst] > tolerance:
        raise ExportVerificationError(
            f"the exported SavedModel differs from the Keras model by {differences[worst]:.3g} "
            f"(output {worst}), more than the tolerance {tolerance:g}; all differences: "
            f"{ {k: float(f'{v:.3g}') for k, v in differences.items()} }"
        )
    return differences[worst]


def _architecture(loaded: LoadedModel, from_run: bool) -> str:
    if from_run:
        return loaded.config.arch
    guess = loaded.model.name.replace("_", "-")
    return guess if guess in ARCHITECTURES else loaded.model.name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _prediction_settings(ensemble: LoadedEnsemble) -> dict[str, Any]:
    """How ``cervixnet predict`` treats the exported model's output, as it treated the run's:
    the input's ``resize`` mode, test-time augmentation, and the validated post-processing
    (``postprocessing.json``; ``None`` when the run chose none)."""
    choice = ensemble.postprocessing
    return {
        "resize": ensemble.config.data.resize,
        "tta": ensemble.config.evaluation.tta,
        "postprocessing": None if choice is None else choice.to_dict(),
    }


def _training_data(folder: Path, config: Config, from_run: bool) -> dict[str, Any]:
    if not from_run:
        return {"run_record": False, "note": "exported from a bare .keras file: no run record"}
    summary: dict[str, Any] = {
        "run_record": True,
        "data_path": config.data.path,
        "synthetic": (
            dataclasses.asdict(config.data.synthetic) if config.data.path is None else None
        ),
        "split_fractions": list(config.data.split),
        "evaluation": config.data.balance.eval,
        "seed": config.seed,
    }
    metrics = _read_json(folder / run_folder.METRICS)
    if isinstance(metrics, dict):
        summary["prepared_data"] = metrics.get("prepared_data")
        summary["epochs"] = metrics.get("epochs")
        summary["best_epoch"] = metrics.get("best_epoch")
        splits = metrics.get("splits") or {}
        summary["n_images"] = {
            name: figures.get("n_images")
            for name, figures in splits.items()
            if isinstance(figures, dict)
        }
    splits = _read_json(folder / run_folder.SPLITS)
    if isinstance(splits, dict):
        summary["manifest"] = splits.get("manifest")
        summary["splits"] = {
            name: {
                "patients": len(part.get("patients", [])),
                "n_images": part.get("n_images"),
                "n_preterm": part.get("n_preterm"),
            }
            for name, part in splits.items()
            if isinstance(part, dict) and "patients" in part
        }
    return summary


def _input_description(spec: _Spec) -> dict[str, Any]:
    """The network input a client must send: size, channels, dtype and range."""
    return {
        "height": spec.height,
        "width": spec.width,
        "channels": spec.channels,
        "dtype": "float32",
        "range": [0.0, 1.0],
    }


def _dtype_policy(loaded: LoadedModel) -> dict[str, str]:
    """The policy the model was trained under, and float32, which every export computes in."""
    return {"trained": models.policy_name(loaded.model), "served": "float32"}


def _ensemble_description(ensemble: LoadedEnsemble, spec: _Spec) -> dict[str, Any]:
    """The models and test-time augmentation averaged inside the graph."""
    return {
        "models": spec.models,
        "folds": [folder.name for folder in ensemble.folders] if ensemble.is_folds else None,
        "horizontal_flip": spec.horizontal_flip,
        "members": spec.members,
        "averaged": "mask and probability are the means over the members (each model, plain "
        "and left-right flipped where horizontal_flip); uncertainty is the per-pixel "
        "population standard deviation of their masks (0 for one member)",
    }


def _metadata(
    ensemble: LoadedEnsemble,
    model_path: str | Path,
    spec: _Spec,
    signatures: dict[str, dict[str, Any]],
    max_diff: float | None,
    tolerance: float,
    batch_norms_folded: int,
) -> dict[str, Any]:
    model_path = Path(model_path)
    loaded = ensemble.members[0]
    model_file = ensemble.folders[0] / run_folder.MODEL if model_path.is_dir() else model_path
    from_run = (model_file.parent / run_folder.CONFIG).is_file()
    config = loaded.config
    calipers = config.data.calipers
    size = f"{spec.height}x{spec.width}"
    if spec.mask_channels == 1:
        mask = (
            "float32 probability that a pixel is cervix, (N, H, W, 1) for serving_default, "
            "(N, mask_h, mask_w, 1) of the whole decoded image for predict_image_bytes"
        )
        each = "members only: float32 (N, members, H, W), each member's mask"
    else:
        c = spec.mask_channels
        mask = (
            f"float32 softmax probabilities of the {c} classes named in 'classes' (the "
            f"background first), (N, H, W, {c}) for serving_default, (N, mask_h, mask_w, {c}) "
            "of the whole decoded image for predict_image_bytes; a pixel's class is its "
            "largest channel"
        )
        each = f"members only: float32 (N, members, H, W, {c}), each member's mask"
    outputs = {
        "mask": mask,
        "uncertainty": "float32 per-pixel standard deviation over the members, shaped as mask",
    }
    if spec.joint:
        outputs["probability"] = "float32 p(preterm birth), (N,)"
        outputs["label"] = f"int32 (N,): 1 where probability >= threshold ({spec.threshold:g})"
    outputs["original_height"] = "int32 (N,), predict_image_bytes only: decoded image height"
    outputs["original_width"] = "int32 (N,), predict_image_bytes only: decoded image width"
    outputs["masks"] = each
    if spec.joint:
        outputs["probabilities"] = "members only: float32 (N, members), each member's p(preterm)"
    resampling = (
        "tf.image.resize, area when shrinking and bilinear when enlarging, as OpenCV "
        "resized the training images (within 1/255; cervixnet.data.pipeline.fit_to_input)"
    )
    fitting = (
        f"letterbox into {size}: one scale, as large as fits, content resized with "
        f"{resampling}, centred on zero padding"
        if spec.resize == "letterbox"
        else f"stretch to {size} with {resampling}"
    )
    caliper_step = (
        "caliper removal: yellow and green caliper marks were filled by Telea inpainting "
        "(OpenCV) before training; it is NOT in the graph. Remove them client-side with "
        "cervixnet.data.calipers.remove_calipers (settings in 'calipers'), or prepare files "
        "with cervixnet.inference.prepare_images and call serving_default"
        if calipers.enabled
        else "caliper removal: disabled in training (data.calipers.enabled false), none needed"
    )
    colour = (
        "colour to grayscale with tf.image.rgb_to_grayscale (ITU-R 601 luma, as OpenCV's "
        "COLOR_BGR2GRAY used by cervixnet data prepare)"
        if spec.channels == 1
        else "grayscale replicated to 3 channels"
    )
    return {
        "format": "cervixnet-savedmodel",
        "format_version": METADATA_FORMAT,
        "architecture": _architecture(loaded, from_run),
        "ensemble": _ensemble_description(ensemble, spec),
        "model_name": loaded.model.name,
        "parameters": int(loaded.model.count_params()),
        "source": str(model_path),
        "input": _input_description(spec),
        "mask_size": list(spec.mask_size),
        "classes": _channel_names(spec),
        "label_output": spec.joint,
        "classification": (
            "p(preterm birth) and a class at the operating threshold"
            if spec.joint
            else "none: segmentation-only model, no probability or label output"
        ),
        "threshold": spec.threshold if spec.joint else None,
        "threshold_source": ensemble.threshold_source if spec.joint else None,
        **_prediction_settings(ensemble),
        "signatures": signatures,
        "outputs": outputs,
        # Batch norms folded into the convolution before them in the served graph.
        "batch_norms_folded": batch_norms_folded,
        "dtype_policy": _dtype_policy(loaded),
        "preprocessing": {
            "serving_default": {
                "in_graph": [],
                "not_in_graph": [
                    caliper_step,
                    "grayscale, resize to the input size (OpenCV area when shrinking, "
                    "bilinear when enlarging) and scaling to [0, 1] (uint8 / 255, "
                    "uint16 / 65535): cervixnet.inference.prepare_images does all of it",
                ],
            },
            "predict_image_bytes": {
                "in_graph": [
                    "decode PNG, JPEG, BMP or GIF (first frame), 8 or 16 bit, to float32 in "
                    "[0, 1] (uint8 / 255, uint16 / 65535); alpha dropped",
                    colour,
                    fitting,
                    "mask and uncertainty: the image's content box resized bilinearly to "
                    f"{spec.mask_size[0]}x{spec.mask_size[1]}",
                ],
                "not_in_graph": [
                    caliper_step,
                    "training images were resized by OpenCV from 8-bit pixels; the in-graph "
                    "resize of float pixels agrees within 1/255: for bit-identical inputs use "
                    "cervixnet.inference.prepare_images and serving_default",
                ],
            },
            "calipers": dataclasses.asdict(calipers),
        },
        "training_data": (
            [
                _training_data(folder, member.config, True)
                for folder, member in zip(ensemble.folders, ensemble.members, strict=True)
            ]
            if ensemble.is_folds
            else _training_data(model_file.parent, config, from_run)
        ),
        "versions": {
            "cervixnet": cervixnet.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
        "verification": {
            "verified": max_diff is not None,
            "max_abs_diff": max_diff,
            "tolerance": tolerance,
        },
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def export_onnx(
    model_path: str | Path,
    out_path: str | Path,
    *,
    verify: bool = True,
    tolerance: float = VERIFY_TOLERANCE,
    unsafe: bool = False,
) -> ExportResult:
    """Exports a run folder (or a ``.keras`` file) as ONNX, with its metadata beside it.

    Writes ``out_path`` (``.onnx``; Keras' ``model.export(format="onnx")``, through tf2onnx)
    and ``out_path`` with the suffix ``.json``: the same fields as a SavedModel export's
    ``cervixnet.json`` that matter to a client (input, threshold, caliper settings) plus
    ``onnx_outputs``, the ONNX names of ``mask`` and ``probability``. The graph takes float32
    images ``(N, H, W, C)`` in [0, 1]; preprocessing is the client's
    (``cervixnet.inference.prepare_images``; ``cervixnet predict`` does it).

    Args:
        verify: run the file with onnxruntime and compare with the Keras model on synthetic
            images (``tolerance`` absolute, default 1e-5, on mask and label probabilities).
        unsafe: load a ``.keras`` file that holds Python code (see :func:`export_savedmodel`).

    Raises:
        ConfigError: no model, an existing ``out_path``, or tf2onnx / onnxruntime missing
            (``pip install 'cervixnet[onnx]'``).
        ExportVerificationError: the ONNX model disagrees with the Keras model.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ConfigError(f"--out for ONNX must be a file ending in .onnx. Received: {out_path}")
    if any(os.path.lexists(p) for p in (out_path, out_path.with_suffix(".json"))):
        raise ConfigError(f"--out {out_path}: exists; choose a new file so nothing is overwritten")
    try:
        import onnxruntime
        import tf2onnx  # noqa: F401 - Keras' ONNX export needs it
    except ImportError:
        raise ConfigError(
            "ONNX export needs tf2onnx and onnxruntime: pip install 'cervixnet[onnx]'"
        ) from None
    ensemble = load_ensemble(model_path, unsafe=unsafe)
    if ensemble.is_folds:
        raise ConfigError(
            f"{model_path}: a --folds folder of {len(ensemble.members)} models; ONNX export "
            "takes one model. Export one fold folder, or the whole ensemble as a SavedModel"
        )
    loaded = ensemble.members[0]
    spec = _spec(ensemble, model_path, None)
    images = _test_images(spec)
    model = models.float32_copy(loaded.model)  # a mixed-precision model is served in float32
    expected = _keras_outputs(model, images, spec)  # also builds the model's graph
    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = out_path.with_name(f".{out_path.name}.partial")
    try:
        with warnings.catch_warnings():  # tf2onnx's own NumPy deprecation notices
            warnings.simplefilter("ignore", FutureWarning)
            model.export(str(staging), format="onnx", verbose=False)
        session = onnxruntime.InferenceSession(str(staging), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        onnx_outputs = dict(zip(model.output_names, names, strict=True))
        max_diff = None
        if verify:
            got = dict(
                zip(names, session.run(None, {session.get_inputs()[0].name: images}), strict=True)
            )
            max_diff = float(np.abs(got[onnx_outputs["mask"]] - expected["mask"]).max())
            if spec.joint:
                diff = np.abs(got[onnx_outputs["label"]][:, 0] - expected["probability"]).max()
                max_diff = max(max_diff, float(diff))
            if not max_diff <= tolerance:
                raise ExportVerificationError(
                    f"the ONNX model differs from the Keras model by {max_diff:.3g} "
                    f"(tolerance {tolerance:g}); nothing was written"
                )
        metadata = {
            "format": "cervixnet-onnx",
            "format_version": METADATA_FORMAT,
            "architecture": _architecture(loaded, (Path(model_path) / run_folder.CONFIG).is_file()),
            "input": {**_input_description(spec), "onnx_name": session.get_inputs()[0].name},
            "classes": _channel_names(spec),
            "label_output": spec.joint,
            "threshold": spec.threshold if spec.joint else None,
            "threshold_source": loaded.threshold_source if spec.joint else None,
            **_prediction_settings(ensemble),
            "dtype_policy": _dtype_policy(loaded),
            "onnx_outputs": {
                "mask": onnx_outputs["mask"],
                **({"probability": onnx_outputs["label"]} if spec.joint else {}),
            },
            "preprocessing": {
                "not_in_graph": "caliper removal, grayscale, resize and scaling to [0, 1]: "
                "cervixnet.inference.prepare_images",
                "calipers": dataclasses.asdict(loaded.config.data.calipers),
            },
            "versions": {
                "cervixnet": cervixnet.__version__,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
            "verification": {"verified": verify, "max_abs_diff": max_diff, "tolerance": tolerance},
        }
        staging.rename(out_path)
    finally:
        staging.unlink(missing_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    signatures = {"onnx": {"inputs": {metadata["input"]["onnx_name"]: {}}, "outputs": onnx_outputs}}
    return ExportResult(out_path, 0, signatures, metadata, max_diff)
