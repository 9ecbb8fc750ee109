"""Trained models on new image files: ``cervixnet predict`` and ``cervixnet gradcam``.

Images are prepared exactly as ``cervixnet data prepare`` prepares training images (caliper
marks filled by Telea inpainting with the run's ``data.calipers`` settings, grayscale, area or
bilinear resize into the network's input size, letterboxed or stretched as ``data.resize``
says, intensities scaled to [0, 1]), so a model sees
new images as it saw its training images. Predicted masks are mapped back to each image's own
size.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from cervixnet import models, run_folder
from cervixnet.analysis import load_operating_point
from cervixnet.clinical import MarkerModels, load_markers
from cervixnet.config import Config, default_config, load_config
from cervixnet.data.dicom import is_dicom, read_dicom_scan
from cervixnet.data.letterbox import fit_image, unfit_probabilities
from cervixnet.data.manifest import read_manifest
from cervixnet.data.prepare import clean_image, read_image
from cervixnet.ensemble import (
    MemberPredictions,
    PostprocessingChoice,
    Run,
    check_fold_members,
    combine_postprocessing,
    load_postprocessing,
    predict_members,
    segment,
)
from cervixnet.errors import ConfigError, DataError, check_output_folder, inside_folder
from cervixnet.evaluation import model_run
from cervixnet.export_metadata import read_export_metadata
from cervixnet.measure import measure, pixel_spacing
from cervixnet.model_file import load_keras_model

# Grad-CAM overlays of small network inputs are enlarged to at least this many pixels.
OVERLAY_MIN_SIDE = 256


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model with the configuration it was trained with and its operating threshold."""

    model: keras.Model
    config: Config
    threshold: float
    threshold_source: str

    @property
    def joint(self) -> bool:
        return models.has_label(self.model)


@dataclasses.dataclass(frozen=True)
class PreparedImages:
    """Network inputs for image files, and what is needed to map results back.

    Attributes:
        inputs: float32 ``(N, H, W, C)`` in [0, 1], the network's input size.
        sizes: ``(height, width)`` of each source image.
        grays: each source image after caliper removal, grayscale at its own size.
        spacings: the pixel spacing ``(dy, dx)`` in mm that each file gives (a DICOM's
            ultrasound region or ``PixelSpacing``), None for image files and DICOMs without.
    """

    inputs: np.ndarray
    sizes: tuple[tuple[int, int], ...]
    grays: tuple[np.ndarray, ...]
    spacings: tuple[tuple[float, float] | None, ...] = ()


def load_model(path: str | Path, *, unsafe: bool = False) -> LoadedModel:
    """Loads a run folder (or its ``model.keras``) for inference.

    The model is loaded in Keras' safe mode: a file holding Python code (a ``Lambda`` layer)
    is refused unless ``unsafe`` is true (``cervixnet.model_file.load_keras_model``). The run's
    ``config.yaml`` gives the preprocessing; without one, the defaults are used at the model's
    input size. The threshold is the run's ``operating_point.json`` (chosen on
    validation) or 0.5 when there is none.

    Raises:
        UnsafeModelError: the model file holds Python code and ``unsafe`` is false.
        ConfigError: no model at ``path``, or a file that is not a cervixnet model.
    """
    path = Path(path)
    model_path = path / run_folder.MODEL if path.is_dir() else path
    if not model_path.is_file() or model_path.suffix != ".keras":
        raise ConfigError(f"{path}: expected a run folder or a .keras model file")
    model = load_keras_model(model_path, unsafe=unsafe)
    folder = model_path.parent
    if (folder / run_folder.CONFIG).is_file():
        config = load_config(folder / run_folder.CONFIG)
    else:
        height, width, channels = model.inputs[0].shape[1:]
        config = default_config().replace(
            {"data.image_size": [int(height), int(width)], "data.channels": int(channels)}
        )
    choice = load_operating_point(folder / run_folder.OPERATING_POINT)
    if choice is not None:
        return LoadedModel(model, config, float(choice.threshold), f"{choice.rule} on val")
    return LoadedModel(model, config, 0.5, "default 0.5")


@dataclasses.dataclass(frozen=True)
class LoadedEnsemble:
    """The Keras models of a run folder, a ``.keras`` file or a ``--folds`` folder, with the
    settings they predict with.

    Attributes:
        members: one :class:`LoadedModel` per model (one per fold for a ``--folds`` folder).
        folders: the run folder of each member.
        threshold: the label threshold: the run's operating point, or the mean of the folds'.
        threshold_source: where the threshold came from.
        postprocessing: the validated post-processing (``postprocessing.json``); for folds,
            the largest-component step is kept when most folds' validation kept it.
    """

    members: tuple[LoadedModel, ...]
    folders: tuple[Path, ...]
    threshold: float
    threshold_source: str
    postprocessing: PostprocessingChoice | None

    @property
    def config(self) -> Config:
        """The first member's configuration (every member has the same input)."""
        return self.members[0].config

    @property
    def joint(self) -> bool:
        return self.members[0].joint

    @property
    def is_folds(self) -> bool:
        return len(self.members) > 1


def load_ensemble(path: str | Path, *, unsafe: bool = False) -> LoadedEnsemble:
    """A run folder or ``.keras`` file (one member), or a ``--folds`` folder (its fold models).

    ``unsafe`` lets a ``.keras`` file with Python code load (see :func:`load_model`).

    Raises:
        ConfigError: nothing loadable at ``path``, or fold models whose inputs or outputs
            differ, so they cannot be averaged.
    """
    path = Path(path)
    folders = run_folder.fold_folders(path)
    if not folders:
        loaded = load_model(path, unsafe=unsafe)
        folder = path if path.is_dir() else path.parent
        return LoadedEnsemble(
            (loaded,), (folder,), loaded.threshold, loaded.threshold_source,
            load_postprocessing(folder),
        )  # fmt: skip
    loaded = [load_model(folder, unsafe=unsafe) for folder in folders]
    check_fold_members(
        folders,
        [(fold.config.data.image_size, fold.config.data.channels) for fold in loaded],
        [fold.model.output_names for fold in loaded],
    )
    postprocessing = combine_postprocessing([load_postprocessing(f) for f in folders])
    return LoadedEnsemble(
        tuple(loaded),
        tuple(folders),
        float(np.mean([fold.threshold for fold in loaded])),
        f"mean of {len(loaded)} folds' thresholds",
        postprocessing,
    )


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A model in any saved form, or an ensemble of fold models, behind one call.

    Attributes:
        kind: ``"keras"`` (a run folder or ``.keras`` file), ``"folds"`` (the fold models of a
            ``cervixnet train --folds`` folder), ``"savedmodel"`` (an export of
            ``cervixnet export``) or ``"onnx"``.
        config: the preprocessing settings (from the run or the export's metadata).
        threshold: the label threshold; ``threshold_source`` says where it came from.
        joint: whether the model has the label output.
        runs: one call per member model, each ``fn(images (N, H, W, C) float32) -> (mask
            (N, H, W, 1), probability (N,) | None)`` (``cervixnet.ensemble.Run``).
        postprocessing: the run's validated post-processing (``postprocessing.json``).
        predict_members: for a model that holds its own ensemble and test-time augmentation
            (a SavedModel export): ``fn(images) -> MemberPredictions``, used instead of
            ``runs``.
        markers: a run folder's label from the mask's measurement, alone and with the image
            model, fitted on its validation split (``markers.json``).
    """

    kind: str
    config: Config
    threshold: float
    threshold_source: str
    joint: bool
    runs: tuple[Run, ...]
    postprocessing: PostprocessingChoice | None = None
    predict_members: Callable[[np.ndarray], MemberPredictions] | None = None
    markers: MarkerModels | None = None

    def members(self, images: np.ndarray, batch_size: int = 8) -> MemberPredictions:
        """Every member's predictions, with the left-right flipped pass of each where the
        run was scored with it (``evaluation.tta``)."""
        if self.predict_members is None:
            return predict_members(
                self.runs, images, horizontal_flip=self.config.evaluation.tta,
                batch_size=batch_size,
            )  # fmt: skip
        batches = [
            self.predict_members(images[start : start + batch_size])
            for start in range(0, len(images), batch_size)
        ]
        probabilities = [b.probabilities for b in batches]
        return MemberPredictions(
            np.concatenate([b.masks for b in batches], axis=1),
            None if probabilities[0] is None else np.concatenate(probabilities, axis=1),
        )

    def predict(self, images: np.ndarray, batch_size: int = 8):
        """Mask probabilities ``(N, H, W, 1)`` (a softmax ``(N, H, W, K + 1)`` for K classes)
        and p(preterm) ``(N,)`` (``None`` if not joint), averaged over the members
        (:meth:`members`)."""
        members = self.members(images, batch_size)
        mask = members.mean_mask()
        return (mask[..., None] if members.classes == 1 else mask), members.mean_probability()


def load_predictor(path: str | Path, *, unsafe: bool = False) -> Predictor:
    """A run folder, a ``--folds`` folder (its fold models averaged), a ``.keras`` file, a
    SavedModel export (``BASE`` or ``BASE/<version>``) or an ``.onnx`` file, ready to predict
    with its own preprocessing settings and threshold.

    ``unsafe`` lets a ``.keras`` file with Python code load (see :func:`load_model`).

    Raises:
        ConfigError: nothing loadable at ``path``.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        return _onnx_predictor(path)
    savedmodel = _savedmodel_folder(path)
    if savedmodel is not None:
        return _savedmodel_predictor(savedmodel)
    ensemble = load_ensemble(path, unsafe=unsafe)
    return Predictor(
        "folds" if ensemble.is_folds else "keras",
        ensemble.config,
        ensemble.threshold,
        ensemble.threshold_source,
        ensemble.joint,
        tuple(model_run(member.model) for member in ensemble.members),
        ensemble.postprocessing,
        markers=None
        if ensemble.is_folds or not path.is_dir()
        else load_markers(path / run_folder.MARKERS),
    )


def _savedmodel_folder(path: Path) -> Path | None:
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.iterdir() if p.name.isdigit()] if path.is_dir() else []
    versions = [p for p in versions if (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _config_from_metadata(metadata: dict) -> Config:
    calipers = metadata.get("preprocessing", {}).get("calipers", {})
    overrides = {
        "data.image_size": [metadata["input"]["height"], metadata["input"]["width"]],
        "data.channels": metadata["input"]["channels"],
    }
    overrides.update({f"data.calipers.{key}": value for key, value in calipers.items()})
    classes = [c for c in metadata.get("classes", []) if c != "background"]
    if classes:
        overrides["data.classes"] = classes
    if "resize" in metadata:  # exports of cervixnet versions that letterbox
        overrides["data.resize"] = metadata["resize"]
        overrides["evaluation.tta"] = bool(metadata.get("tta"))
    else:  # earlier exports squashed every scan and predicted once
        overrides.update({"data.resize": "stretch", "evaluation.tta": False})
    return default_config().replace(overrides)


def _export_predictor(kind: str, metadata: dict, run: Run | None) -> Predictor:
    """A SavedModel or ONNX export's :data:`Run` with the settings its metadata records."""
    threshold = float(metadata.get("threshold") or 0.5)
    source = f"export ({metadata.get('threshold_source') or 'default 0.5'})"
    choice = metadata.get("postprocessing")
    return Predictor(
        kind,
        _config_from_metadata(metadata),
        threshold,
        source,
        bool(metadata.get("label_output")),
        () if run is None else (run,),
        None if choice is None else PostprocessingChoice.from_dict(choice),
    )


def _savedmodel_predictor(folder: Path) -> Predictor:
    import tensorflow as tf

    metadata = read_export_metadata(folder)
    signatures = tf.saved_model.load(str(folder)).signatures
    joint = bool(metadata.get("label_output"))
    predictor = _export_predictor("savedmodel", metadata, None)
    if "members" in signatures:  # the export holds its ensemble and test-time augmentation
        members = signatures["members"]

        def predict(images: np.ndarray) -> MemberPredictions:
            outputs = members(images=tf.constant(images))
            masks = np.moveaxis(outputs["masks"].numpy(), 1, 0)  # (M, N, H, W[, K + 1])
            probabilities = np.moveaxis(outputs["probabilities"].numpy(), 1, 0) if joint else None
            return MemberPredictions(masks, probabilities)

        return dataclasses.replace(predictor, predict_members=predict)
    served = signatures["serving_default"]  # an export of one model, predicting once

    def run(images):
        outputs = served(images=tf.constant(images))
        probability = outputs["probability"].numpy() if joint else None
        return outputs["mask"].numpy(), probability

    return dataclasses.replace(predictor, runs=(run,))


def _onnx_predictor(path: Path) -> Predictor:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            f"{path}: reading ONNX models needs onnxruntime: pip install 'cervixnet[onnx]'"
        ) from None
    metadata_path = path.with_suffix(".json")
    if not metadata_path.is_file():
        raise ConfigError(
            f"{path}: its metadata {metadata_path.name} (written by cervixnet export) is missing"
        )
    import json

    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    joint = bool(metadata.get("label_output"))

    def run(images):
        outputs = dict(zip(names, session.run(None, {input_name: images}), strict=True))
        mask = outputs[metadata["onnx_outputs"]["mask"]]
        probability = outputs[metadata["onnx_outputs"]["probability"]] if joint else None
        return mask, probability

    return _export_predictor("onnx", metadata, run)


def prepare_images(paths: Sequence[str | Path], config: Config) -> PreparedImages:
    """Reads image files (or DICOM files: their first frame, as the scanner showed it) and
    prepares them as ``cervixnet data prepare`` does.

    Raises:
        DataError: naming the file that cannot be read or has an unsupported pixel type (for
            a DICOM, also the tag: ``cervixnet.data.dicom``).
    """
    height, width = config.data.image_size
    inputs, sizes, grays, spacings = [], [], [], []
    for path in paths:
        if is_dicom(path):
            source, spacing = read_dicom_scan(path)
        else:
            source, spacing = read_image(path), None
        spacings.append(spacing)
        gray, _ = clean_image(source, config.data.calipers, name=path)
        resized = fit_image(gray, (height, width), config.data.resize)
        scale = 65535.0 if resized.dtype == np.uint16 else 255.0
        image = resized.astype(np.float32)[..., None] / scale
        if config.data.channels == 3:
            image = np.repeat(image, 3, axis=-1)
        inputs.append(image)
        sizes.append(gray.shape[:2])
        grays.append(gray)
    return PreparedImages(np.stack(inputs), tuple(sizes), tuple(grays), tuple(spacings))


def manifest_images(path: str | Path) -> tuple[list[Path], list[tuple[float, float]] | None]:
    """The image files of a data set (its folder or its ``manifest.csv``), validated as
    training validates them, with each row's pixel spacing ``(dy, dx)`` in mm (None when the
    manifest gives none).

    Raises:
        DataError: naming the file, row and column of what is wrong in the manifest.
    """
    manifest = read_manifest(path)
    spacings = [record.spacing for record in manifest.records]
    return [record.image for record in manifest.records], (
        None if spacings and spacings[0] is None else spacings
    )


def predict_files(
    model_path: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    spacings: Sequence[Any] | None = None,
    unsafe: bool = False,
) -> Path:
    """Writes masks, overlays and ``predictions.csv`` for image files.

    ``model_path`` is anything :func:`load_predictor` reads: a run folder, a ``.keras`` file,
    a SavedModel export or an ``.onnx`` file; all give the same results within float tolerance.

    The model predicts each image as the run was scored: with ``evaluation.tta`` the plain
    and the left-right flipped prediction are averaged, and the run's validated
    post-processing (``postprocessing.json``) is applied.

    ``out_dir`` gets ``masks/<name>.png`` (0/255, each image's own size; for a model of
    several ``data.classes`` the class ids 0 to K), ``uncertainty/<name>.png`` (the
    per-pixel spread of the averaged predictions, 0-255 for 0-0.5; black for a model without
    test-time augmentation), ``overlays/<name>.png`` (the predicted outline on the image, one
    colour per class with their names, and p(preterm)) and ``predictions.csv`` (image, width,
    height, probability, predicted class at the run's operating threshold, threshold, mask
    area in pixels (and ``pixels_<class>`` per class), an uncertainty score that ranks the
    images most worth a human look, the measurements of the mask,
    ``cervixnet.measure.measure``: ``canal_length_mm`` for two lips or more,
    ``cervical_length_mm``,
    ``head_circumference_mm`` and ``area_mm2`` with ``spacings``, one pixel spacing per image
    (mm, or ``(dy, dx)``), else ``cervical_length_px``, ``head_circumference_px`` and
    ``area_px2``; a DICOM file gives its own spacing (``cervixnet.data.dicom``); and for a
    run folder with ``markers.json`` whose measurement is among them,
    ``combined_probability``, the label from that measurement and the image model together).

    Output files are named after each image's file name only (``a/b/scan.png`` ->
    ``scan.png``), so no input path can put a file outside ``out_dir``. ``unsafe`` lets a
    ``.keras`` file with Python code load (see :func:`load_model`).

    Returns:
        The path of ``predictions.csv``.
    """
    if spacings is not None and len(spacings) != len(images):
        raise ConfigError(
            f"one pixel spacing per image: {len(images)} images, {len(spacings)} spacings"
        )
    try:
        spacings = None if spacings is None else [pixel_spacing(s) for s in spacings]
    except ValueError as error:
        raise ConfigError(str(error)) from None
    loaded = load_predictor(model_path, unsafe=unsafe)
    check_output_folder(out_dir)
    prepared = prepare_images(images, loaded.config)  # a broken image stops before any output
    spacings = _file_spacings(images, prepared.spacings, spacings)
    out_dir = _new_folder(out_dir)
    members = loaded.members(prepared.inputs)
    mask_prob, mask_std = members.mean_mask(), members.std_mask()
    probability = members.mean_probability() if loaded.joint else None
    uncertainty = members.uncertainty_scores()
    class_names = mask_class_names(loaded.config, members.classes)
    for folder in ("masks", "overlays", "uncertainty"):
        (out_dir / folder).mkdir()
    names = _unique_names(images)
    resize = loaded.config.data.resize
    rows = []
    for k, (path, name) in enumerate(zip(images, names, strict=True)):
        height, width = prepared.sizes[k]
        full = unfit_probabilities(mask_prob[k], (height, width), resize)
        mask = segment(full, loaded.postprocessing)  # class ids: 0/1 for one class
        _write_png(
            inside_folder(out_dir, f"masks/{name}"), mask * 255 if len(class_names) == 1 else mask
        )
        # One class: the spread of its probability; several: of the background's, the
        # spread of the probability of the organ.
        std = mask_std[k] if members.classes == 1 else mask_std[k][..., 0]
        spread = unfit_probabilities(std, (height, width), resize)
        # The spread of probabilities is at most 0.5: 0.5 maps to 255.
        spread = np.clip(np.rint(spread * 510), 0, 255).astype(np.uint8)
        _write_png(inside_folder(out_dir, f"uncertainty/{name}"), spread)
        p = None if probability is None else float(probability[k])
        measured = measure(mask, spacings and spacings[k], classes=len(class_names))
        combined = {}
        if loaded.markers is not None and p is not None and loaded.markers.measurement in measured:
            value = loaded.markers.predict([measured[loaded.markers.measurement]], [p])["combined"]
            combined["combined_probability"] = "" if np.isnan(value[0]) else f"{value[0]:.6f}"
        overlay = _outline_overlay(prepared.grays[k], mask, p, class_names)
        _write_png(inside_folder(out_dir, f"overlays/{name}"), overlay)
        rows.append(
            {
                "image": str(path),
                "width": width,
                "height": height,
                "probability": "" if p is None else f"{p:.6f}",
                "predicted_class": "" if p is None else int(p >= loaded.threshold),
                "threshold": f"{loaded.threshold:.6f}" if p is not None else "",
                "threshold_source": loaded.threshold_source if p is not None else "",
                "mask_pixels": int(np.count_nonzero(mask)),
                **(
                    {
                        f"pixels_{c}": int(np.count_nonzero(mask == i))
                        for i, c in enumerate(class_names, start=1)
                    }
                    if len(class_names) > 1
                    else {}
                ),
                "uncertainty": f"{uncertainty[k]:.6f}",
                **{
                    key: "" if not np.isfinite(value) else f"{value:.3f}"
                    for key, value in measured.items()
                },
                **combined,
                "mask": f"masks/{name}",
                "uncertainty_map": f"uncertainty/{name}",
            }
        )
    table = out_dir / run_folder.PREDICTIONS
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def _file_spacings(
    images: Sequence[str | Path],
    in_files: Sequence[tuple[float, float] | None],
    given: list[tuple[float, float]] | None,
) -> list[tuple[float, float]] | None:
    """The spacing of each image: the one its DICOM file gives, else the one given; all or
    none, so that no table mixes millimetres and pixels."""
    from_files = [k for k, spacing in enumerate(in_files) if spacing is not None]
    if not from_files:
        return given
    if given is not None:
        raise ConfigError(
            f"{images[from_files[0]]}: the DICOM file gives its own pixel spacing; leave "
            "--spacing out"
        )
    missing = [k for k, spacing in enumerate(in_files) if spacing is None]
    if missing:
        raise ConfigError(
            f"{images[missing[0]]}: gives no pixel spacing, while {images[from_files[0]]} does; "
            "predict files of one kind together, or pass --spacing for files without"
        )
    return list(in_files)


def explain_files(
    model_path: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    method: str = "gradcam",
    layer: str | None = None,
    *,
    unsafe: bool = False,
) -> list[Path]:
    """Writes one class-activation overlay per image file (``cervixnet.explain``).

    Overlays are named after each image's file name only, as in :func:`predict_files`;
    ``unsafe`` lets a ``.keras`` file with Python code load (see :func:`load_model`).

    Raises:
        ConfigError: the model has no ``label`` output, or a bad method or layer.
    """
    from cervixnet.explain import explain_images

    if Path(model_path).suffix == ".onnx" or _savedmodel_folder(Path(model_path)) is not None:
        raise ConfigError(
            f"{model_path}: Grad-CAM needs the Keras model; pass the run folder or its model.keras"
        )
    loaded = load_model(model_path, unsafe=unsafe)
    if not loaded.joint:
        raise ConfigError(
            f"{model_path}: Grad-CAM explains the label output of the joint model "
            f"(unet-joint); this model has outputs {[t.name for t in loaded.model.outputs]}"
        )
    prepared = prepare_images(images, loaded.config)
    try:
        explained = explain_images(
            loaded.model, prepared.inputs, method=method, layer=layer, min_side=OVERLAY_MIN_SIDE
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    out_dir = _new_folder(out_dir)
    written = []
    for name, explanation in zip(_unique_names(images), explained, strict=True):
        path = inside_folder(out_dir, name)
        _write_png(path, explanation.overlay)
        written.append(path)
    return written


def mask_class_names(config: Config, classes: int) -> tuple[str, ...]:
    """The names of a model's ``classes`` mask classes: ``data.classes`` when it names as
    many, else ``class_1``, ``class_2``, ... (a model file without its run's config)."""
    names = tuple(config.data.classes)
    return names if len(names) == classes else tuple(f"class_{k}" for k in range(1, classes + 1))


def _outline_overlay(
    gray: np.ndarray,
    mask: np.ndarray,
    probability: float | None,
    class_names: Sequence[str] = ("cervix",),
) -> np.ndarray:
    """The image with the predicted outline: magenta for one class, each class in its colour
    of ``cervixnet.figures.class_colour`` and named in a key for several."""
    if gray.dtype == np.uint16:
        gray = (gray >> 8).astype(np.uint8)
    picture = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(min(gray.shape) / 200))
    scale = max(0.4, min(gray.shape) / 500)
    line = int(24 * scale) + 4
    several = len(class_names) > 1
    for index, name in enumerate(class_names, start=1):
        region = (mask == index).astype(np.uint8) if several else (mask > 0).astype(np.uint8)
        colour = _bgr(index - 1) if several else (255, 0, 255)
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, colour, thickness, cv2.LINE_AA)
        if several:  # the key, bottom left, one line per class in its colour
            y = gray.shape[0] - 8 - (len(class_names) - index) * line
            cv2.putText(picture, name, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1,
                        cv2.LINE_AA)  # fmt: skip
    if probability is not None:
        cv2.putText(picture, f"p(preterm) = {probability:.2f}", (8, line),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    return picture


def _bgr(index: int) -> tuple[int, int, int]:
    """Class ``index``'s colour (``cervixnet.figures.class_colour``) as OpenCV's BGR bytes."""
    from cervixnet.figures import class_colour

    red, green, blue, _ = class_colour(index)
    return round(blue * 255), round(green * 255), round(red * 255)


def _unique_names(paths: Sequence[str | Path]) -> list[str]:
    names, seen = [], set()
    for path in paths:
        stem = Path(path).stem or "image"
        name, k = f"{stem}.png", 2
        while name in seen:
            name, k = f"{stem}-{k}.png", k + 1
        seen.add(name)
        names.append(name)
    return names


def _new_folder(path: str | Path) -> Path:
    path = check_output_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise DataError(f"{path}: could not encode as PNG")
    encoded.tofile(str(path))
