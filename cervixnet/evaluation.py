"""Per-split figures of a trained model: the paper's segmentation and classification tables.

Segmentation is scored per image at each scan's own size (the predicted probabilities mapped
back through the letterbox, thresholded, cleaned by the run's validated post-processing):
mean and std of IoU, Dice, HD95 and ASSD (in mm where the manifest gives the pixel spacing,
else in the scan's pixels) over the images that have a mask; classification
over the images that have a label (``cervixnet.analysis.binary_figures``: AUC, precision,
recall, specificity and more, a probability >= the threshold counting as preterm). When
the manifest carries the synthetic generator's latent ``risk`` column, the AUC that risk
reaches on the same images is reported as ``best_auc``: no model can do better on average.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from cervixnet import analysis, clinical, measure, models
from cervixnet import metrics as cx_metrics
from cervixnet.config import AugmentConfig, Config
from cervixnet.data import imagefile
from cervixnet.data.letterbox import unfit_probabilities
from cervixnet.data.manifest import Manifest
from cervixnet.data.pipeline import make_dataset
from cervixnet.ensemble import PostprocessingChoice, Run, predict_members, segment
from cervixnet.fileio import atomic_path


def model_run(model: keras.Model) -> Run:
    """``model`` as an ensemble :data:`~cervixnet.ensemble.Run`: images ->
    (mask probabilities ``(N, H, W, 1)`` or ``(N, H, W, K + 1)``, p(label) ``(N,)`` or
    ``None``), float32."""

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = models.named_outputs(model, model(images, training=False))
        mask = keras.ops.convert_to_numpy(outputs["mask"]).astype(np.float32)
        if "label" not in outputs:
            return mask, None
        return mask, keras.ops.convert_to_numpy(outputs["label"])[:, 0].astype(np.float32)

    return run


def predict_records(
    model: keras.Model | Sequence[keras.Model],
    manifest: Manifest,
    indices: Sequence[int],
    *,
    image_size: Sequence[int],
    channels: int,
    batch_size: int = 8,
    classes: int = 1,
    copies: Sequence[bool] | None = None,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    keep_images: bool = False,
    tta: bool = False,
) -> dict[str, np.ndarray]:
    """Runs ``model`` (or an ensemble of models) over records; arrays aligned with ``indices``.

    ``copies`` flags positions that are augmented copies (the paper's balanced evaluation,
    ``cervixnet.data.balance``): those images get ``augment``'s transforms with ``seed``, the
    others are used as they are. With several models, or ``tta`` (a left-right flipped pass
    of each model, flipped back), the members' probabilities are averaged
    (``cervixnet.ensemble.predict_members``).

    Returns:
        ``mask_true`` (N, H, W) in {0, 1} (class ids for several ``classes``) at the input
        size, ``has_mask`` (N,), ``mask_prob`` (N, H, W) (``(N, H, W, K + 1)`` for K
        classes), ``mask_std`` the spread over members, same shape (0 for one), ``uncertainty``
        (N,) (``MemberPredictions.uncertainty_scores``), ``label`` (N,) with NaN where
        unknown, for a joint model ``probability`` (N,), and with ``keep_images`` the network
        inputs ``images`` (N, H, W, C).
    """
    members = [model] if isinstance(model, keras.Model) else list(model)
    joint = models.has_label(members[0])
    runs = [model_run(m) for m in members]
    dataset = make_dataset(
        manifest,
        indices,
        image_size=image_size,
        channels=channels,
        batch_size=batch_size,
        joint=True,
        training=False,
        classes=classes,
        copies=copies,
        augment=augment,
        seed=seed,
    )
    parts: dict[str, list[np.ndarray]] = {
        name: []
        for name in ("mask_true", "has_mask", "label", "has_label", "mask_prob", "mask_std")
    }
    parts.update(uncertainty=[], probability=[], images=[])
    for images, targets, weights in dataset:
        images = np.asarray(images)
        mask, label = targets["mask"], targets["label"]
        mask_weight, label_weight = weights["mask"], weights["label"]
        if keep_images:
            parts["images"].append(images)
        predicted = predict_members(runs, images, horizontal_flip=tta, batch_size=len(images))
        parts["mask_true"].append(np.asarray(mask)[..., 0])
        parts["has_mask"].append(np.asarray(mask_weight))
        parts["label"].append(np.asarray(label)[:, 0])
        parts["has_label"].append(np.asarray(label_weight))
        parts["mask_prob"].append(predicted.mean_mask())
        parts["mask_std"].append(predicted.std_mask())
        parts["uncertainty"].append(predicted.uncertainty_scores())
        if joint:
            parts["probability"].append(predicted.mean_probability())
    joined = {name: np.concatenate(values) for name, values in parts.items() if values}
    result = {
        "mask_true": joined["mask_true"],
        "has_mask": joined["has_mask"] > 0,
        "mask_prob": joined["mask_prob"],
        "mask_std": joined["mask_std"],
        "uncertainty": joined["uncertainty"],
        "label": np.where(joined["has_label"] > 0, joined["label"], np.nan),
    }
    if joint:
        result["probability"] = joined["probability"]
    if keep_images:
        result["images"] = joined["images"]
    return result


def mask_classes(mask_prob: np.ndarray) -> int:
    """The foreground classes of :func:`predict_records`' ``mask_prob``: 1 for ``(N, H, W)``,
    K for ``(N, H, W, K + 1)``."""
    return np.shape(mask_prob)[-1] - 1 if np.ndim(mask_prob) == 4 else 1


# Per-image segmentation scores, in the order of the report's tables.
SEGMENTATION_SCORES = ("iou", "dice", "hd95", "assd")


def predict_configured(
    model: keras.Model | Sequence[keras.Model],
    config: Config,
    manifest: Manifest,
    indices: Sequence[int],
    **options: Any,
) -> dict[str, np.ndarray]:
    """:func:`predict_records` with the run's input size, channels, batch size and test-time
    augmentation taken from ``config``; ``options`` (``copies``, ``augment``, ``seed``,
    ``keep_images``) pass through."""
    return predict_records(
        model,
        manifest,
        indices,
        image_size=config.data.image_size,
        channels=config.data.channels,
        batch_size=config.training.batch_size,
        classes=len(config.data.classes),
        tta=config.evaluation.tta,
        **options,
    )


def source_size_pairs(
    manifest: Manifest,
    indices: Sequence[int],
    mask_prob: np.ndarray,
    resize: str = "letterbox",
    *,
    copies: Sequence[bool] | None = None,
    masks_true: np.ndarray | None = None,
) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Per record, ``(true mask, predicted probabilities)`` at the scan's own size.

    The probabilities ``mask_prob`` ``(N, H, W)`` (``(N, H, W, K + 1)`` of K classes) at the
    network's input size are cropped to the letterbox's content and resized bilinearly to the
    scan (``cervixnet.data.letterbox.unfit_probabilities``); the truth is the prepared copy's
    ``native_mask``, bool for one class, uint8 class ids for several. A record without one
    (no mask, or a copy prepared before native masks were kept) is paired at the input size
    with its prepared mask, or ``None``. So is an augmented copy of the paper's balanced
    evaluation (``copies``), with its augmented mask from ``masks_true`` ``(N, H, W)``: no
    scan holds its pixels.
    """
    several = np.ndim(mask_prob) == 4

    def truth_of(values: np.ndarray) -> np.ndarray:
        return np.asarray(values).astype(np.uint8) if several else np.asarray(values) > 0

    pairs = []
    for k, index in enumerate(indices):
        record = manifest.records[index]
        native = record.extra.get("native_mask")
        if copies is not None and copies[k]:
            truth = None if record.mask is None else truth_of(np.rint(masks_true[k]))
            pairs.append((truth, np.asarray(mask_prob[k], np.float32)))
        elif native:
            truth = truth_of(imagefile.mask_values(imagefile.read_image(manifest.root / native)))
            prob = unfit_probabilities(mask_prob[k], truth.shape, resize)
            pairs.append((truth, prob))
        elif record.mask is not None:
            truth = truth_of(imagefile.mask_values(imagefile.read_image(record.mask)))
            pairs.append((truth, np.asarray(mask_prob[k], np.float32)))
        else:
            pairs.append((None, np.asarray(mask_prob[k], np.float32)))
    return pairs


def pair_spacings(
    manifest: Manifest, indices: Sequence[int], copies: Sequence[bool] | None = None
) -> list[tuple[float, float] | None]:
    """The pixel spacing ``(dy, dx)`` in mm of each :func:`source_size_pairs` pair, or None.

    A pair at the scan's own size has the scan's spacing (``Record.native_spacing``); one at
    the network's input size has the prepared image's (``Record.spacing``), an augmented copy
    too (the zoom of its random crop, within ``data.augment.crop``, is not accounted for).
    """
    spacings = []
    for k, index in enumerate(indices):
        record = manifest.records[index]
        native = bool(record.extra.get("native_mask")) and not (copies is not None and copies[k])
        spacings.append(record.native_spacing if native else record.spacing)
    return spacings


def distance_unit(manifest: Manifest) -> str:
    """``"mm"`` when the manifest gives every row's pixel spacing (it gives all or none),
    else ``"px"``: the unit of HD95 and ASSD."""
    return "mm" if manifest.records and manifest.records[0].spacing is not None else "px"


def segmentation_scores(
    pairs: Sequence[tuple[np.ndarray | None, np.ndarray]],
    postprocessing: PostprocessingChoice | None = None,
    threshold: float = 0.5,
    spacings: Sequence[tuple[float, float] | None] | None = None,
) -> dict[str, np.ndarray]:
    """IoU, Dice, HD95 and ASSD of every ``(truth, probabilities)`` pair (``source_size_pairs``).

    The prediction is ``probabilities > threshold`` (each pixel's most probable class for
    several classes), then ``postprocessing`` (the run's validated largest-component step):
    ``cervixnet.ensemble.segment``. Distances are in mm with each pair's ``spacings``
    (:func:`pair_spacings`), else in pixels of the pair (the scan's own). Returns ``(N,)``
    float64 arrays, NaN where there is no truth (and for the distances where either mask is
    empty). For K classes, ``iou``, ``dice`` and the distances score the organ (every class
    against the background), and ``class_iou`` and ``class_dice`` ``(N, K)`` each class.

    Raises:
        ValueError: ``spacings`` gives some pairs a spacing and not others.
    """
    if spacings is not None and len({s is None for s in spacings}) > 1:
        raise ValueError(
            "`spacings` must give every pair a spacing or none: distances in mm for some "
            f"and pixels for others. Received: {sum(s is None for s in spacings)} of "
            f"{len(spacings)} without"
        )
    scores = {name: np.full(len(pairs), np.nan) for name in SEGMENTATION_SCORES}
    classes = max((np.shape(prob)[-1] - 1 for _, prob in pairs if np.ndim(prob) == 3), default=1)
    if classes > 1:
        scores["class_iou"] = np.full((len(pairs), classes), np.nan)
        scores["class_dice"] = np.full((len(pairs), classes), np.nan)
    for k, (truth, prob) in enumerate(pairs):
        if truth is None:
            continue
        prediction = segment(prob, postprocessing, threshold)
        organ_truth, organ = np.asarray(truth) > 0, prediction > 0
        scores["iou"][k] = cx_metrics.iou_per_image(organ_truth[None], organ[None])[0]
        scores["dice"][k] = cx_metrics.dice_per_image(organ_truth[None], organ[None])[0]
        if classes > 1:
            per_class = cx_metrics.class_scores_per_image(truth[None], prediction[None], classes)
            scores["class_iou"][k], scores["class_dice"][k] = (
                per_class["iou"][0],
                per_class["dice"][0],
            )
        spacing = None if spacings is None else spacings[k]
        scores["hd95"][k], scores["assd"][k] = analysis.surface_distances(
            organ_truth, organ, spacing
        )
    return scores


def measurement_name(manifest: Manifest, unit: str | None = None, classes: int = 1) -> str:
    """The measurement that stands as the clinical marker of ``manifest``'s label: the first
    of ``cervical_length``, ``head_circumference`` and ``area`` (``canal_length`` before them
    for two classes or more) whose reference column (e.g. ``head_circumference_mm``) the
    manifest has, else the first of them; named with ``unit`` (default
    :func:`distance_unit`'s), e.g. ``"cervical_length_mm"``."""
    unit = unit or distance_unit(manifest)
    stems = (("canal_length",) if classes >= 2 else ()) + measure.MEASUREMENTS
    names = [f"{name}_{unit}" + ("2" if name == "area" else "") for name in stems]
    columns = set(manifest.records[0].extra) if manifest.records else set()
    return next((name for name in names if name in columns), names[0])


def measure_pairs(
    pairs: Sequence[tuple[np.ndarray | None, np.ndarray]],
    spacings: Sequence[tuple[float, float] | None] | None = None,
    postprocessing: PostprocessingChoice | None = None,
    threshold: float = 0.5,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Every measurement of each pair's predicted mask (``cervixnet.measure.measure``), at the
    scan's own size and spacing: ``{"cervical_length_mm": (N,), ...}`` (the ``_px`` names
    without spacing; ``canal_length_mm`` first for two classes or more); ``names`` keeps only
    those. The mask is ``cervixnet.ensemble.segment``'s, as :func:`segmentation_scores`
    scores it."""
    spacings = [None] * len(pairs) if spacings is None else list(spacings)
    rows = [
        measure.measure(
            segment(prob, postprocessing, threshold),
            spacing,
            names,
            classes=np.shape(prob)[-1] - 1 if np.ndim(prob) == 3 else 1,
        )
        for (_, prob), spacing in zip(pairs, spacings, strict=True)
    ]
    keys = list(rows[0]) if rows else list(names or [])
    return {key: np.array([row[key] for row in rows], np.float64) for key in keys}


def fit_split_markers(
    manifest: Manifest,
    indices: Sequence[int],
    predictions: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[np.ndarray | None, np.ndarray]],
    postprocessing: PostprocessingChoice | None = None,
    copies: Sequence[bool] | None = None,
) -> clinical.MarkerModels:
    """The label from the measurement of :func:`measurement_name`, alone and with the image
    model's probability (``cervixnet.clinical.fit_markers``), fitted on one split's original
    scans (augmented copies left out), measured at each scan's own size and spacing.

    Raises:
        ValueError: too few scans with a label and a measurement, or one class.
    """
    name = measurement_name(manifest, classes=mask_classes(predictions["mask_prob"]))
    spacings = pair_spacings(manifest, indices, copies) if distance_unit(manifest) == "mm" else None
    measured = measure_pairs(pairs, spacings, postprocessing, names=[name])[name]
    original = ~np.asarray(copies if copies is not None else [False] * len(indices), bool)
    return clinical.fit_markers(
        predictions["label"][original],
        measured[original],
        predictions["probability"][original],
        name,
    )


def split_metrics(
    predictions: Mapping[str, np.ndarray],
    risk: Sequence[float | None] | None = None,
    threshold: float = 0.5,
    scores: Mapping[str, np.ndarray] | None = None,
    distance_unit: str = "px",
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Segmentation and (for a joint model) classification figures for one split.

    ``scores``: the per-image :func:`segmentation_scores` at each scan's own size, their
    distances in ``distance_unit`` (``"mm"`` or ``"px"``); without them the masks are scored
    at the network's input size. For several classes (``class_names``, ``data.classes``)
    the segmentation also holds ``classes``, each class's IoU and Dice (mean and std), and
    ``class_dice_mean``/``_std``, the mean over classes of each image's Dice.
    """
    has_mask = predictions["has_mask"]
    classes = mask_classes(predictions.get("mask_prob"))
    if scores is None and classes > 1 and has_mask.any():
        scores, scored_at = _input_size_class_scores(predictions, classes), "input size"
    else:
        scored_at = "source size"
    result: dict[str, Any] = {"n_images": len(has_mask)}
    if scores is not None and has_mask.any():
        summary: dict[str, Any] = {"n_images": int(has_mask.sum()), "scored_at": scored_at}
        if "hd95" in scores:
            summary["distance_unit"] = distance_unit
        for name in SEGMENTATION_SCORES:
            if name in scores:
                summary.update(_mean_and_std(name, np.asarray(scores[name])[has_mask]))
        if "class_dice" in scores:
            names = list(class_names or [f"class_{k}" for k in range(1, classes + 1)])
            class_iou = np.asarray(scores["class_iou"])[has_mask]
            class_dice = np.asarray(scores["class_dice"])[has_mask]
            summary["classes"] = {
                name: {
                    **_mean_and_std("iou", class_iou[:, k]),
                    **_mean_and_std("dice", class_dice[:, k]),
                }
                for k, name in enumerate(names)
            }
            summary.update(_mean_and_std("class_dice", class_dice.mean(axis=1)))
        result["segmentation"] = summary
    elif has_mask.any():
        result["segmentation"] = {
            **cx_metrics.segmentation_summary(
                predictions["mask_true"][has_mask], predictions["mask_prob"][has_mask]
            ),
            "scored_at": "input size",
        }
    if "probability" in predictions:
        labels = predictions["label"]
        known = ~np.isnan(labels)
        if known.any():
            figures = analysis.binary_figures(
                labels[known], predictions["probability"][known], threshold
            )
            # An undefined figure (a ratio over zero cases, an AUC of one class) is null.
            summary = {
                key: None if isinstance(value, float) and math.isnan(value) else value
                for key, value in figures.items()
            }
            if risk is not None:
                summary["best_auc"] = _best_auc(labels[known], np.asarray(risk, float)[known])
            result["classification"] = summary
    return result


def _input_size_class_scores(
    predictions: Mapping[str, np.ndarray], classes: int
) -> dict[str, np.ndarray]:
    """:func:`segmentation_scores`' IoU and Dice of the organ and of each class, from
    :func:`predict_records`' masks at the network's input size (no distances)."""
    per_class = cx_metrics.class_scores_per_image(
        predictions["mask_true"], predictions["mask_prob"], classes
    )
    return {
        "iou": per_class["union_iou"],
        "dice": per_class["union_dice"],
        "class_iou": per_class["iou"],
        "class_dice": per_class["dice"],
    }


def _mean_and_std(name: str, values: np.ndarray) -> dict[str, float | None]:
    """``{name_mean, name_std}`` of the finite values (population std), None when none."""
    finite = values[np.isfinite(values)]
    return {
        f"{name}_mean": float(finite.mean()) if finite.size else None,
        f"{name}_std": float(finite.std()) if finite.size else None,
    }


def _best_auc(labels: np.ndarray, risk: np.ndarray) -> float | None:
    usable = ~np.isnan(risk)
    if len(set(labels[usable].tolist())) < 2:
        return None
    return float(roc_auc_score(labels[usable], risk[usable]))


def write_predictions(
    path: str | Path,
    manifest: Manifest,
    per_split: Mapping[str, tuple[Sequence[int], Mapping, Sequence[bool]]],
    scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    distance_unit: str = "px",
    class_names: Sequence[str] | None = None,
) -> None:
    """Writes one CSV row per image: split, image, patient, label, probability, IoU, Dice,
    HD95 and ASSD (columns ``hd95_mm`` and ``assd_mm``, or ``_px`` in the scan's pixels, as
    ``distance_unit`` says), and the uncertainty score. For several classes (``class_names``)
    IoU, Dice and the distances are the organ's, and ``dice_<class>`` columns follow.

    ``per_split`` maps a split name to ``(indices, predictions, copies)``; ``copies`` flags
    augmented copies, written in the ``augmented_copy`` column (1 for a copy). ``scores``
    maps a split name to its :func:`segmentation_scores` (at each scan's own size); a split
    without them is scored at the network's input size (IoU and Dice only).
    """
    several = len(class_names or ()) > 1
    class_columns = [f"dice_{name}" for name in class_names] if several else []
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "split",
                "image",
                "source_image",
                "patient_id",
                "label",
                "probability",
                "iou",
                "dice",
                f"hd95_{distance_unit}",
                f"assd_{distance_unit}",
                "uncertainty",
                "augmented_copy",
                *class_columns,
            ]
        )
        for split, (indices, predictions, copies) in per_split.items():
            split_scores = (scores or {}).get(split)
            if split_scores is None and several:
                split_scores = _input_size_class_scores(predictions, len(class_names))
            elif split_scores is None:
                split_scores = {
                    "iou": cx_metrics.iou_per_image(
                        predictions["mask_true"], predictions["mask_prob"]
                    ),
                    "dice": cx_metrics.dice_per_image(
                        predictions["mask_true"], predictions["mask_prob"]
                    ),
                }
            uncertainty = predictions.get("uncertainty")
            probability = predictions.get("probability")
            for k, index in enumerate(indices):
                record = manifest.records[index]
                writer.writerow(
                    [
                        split,
                        str(record.image.relative_to(manifest.root)),
                        record.extra.get("source_image", ""),
                        record.patient_id,
                        "" if record.label is None else record.label,
                        "" if probability is None else f"{probability[k]:.6f}",
                        *(
                            _cell(split_scores.get(name), k, predictions["has_mask"][k])
                            for name in SEGMENTATION_SCORES
                        ),
                        "" if uncertainty is None else f"{uncertainty[k]:.6f}",
                        int(bool(copies[k])),
                        *(
                            _cell(split_scores["class_dice"][:, c], k, predictions["has_mask"][k])
                            for c in range(len(class_columns))
                        ),
                    ]
                )


def _cell(values: np.ndarray | None, k: int, has_mask: bool) -> str:
    if values is None or not has_mask or not math.isfinite(values[k]):
        return ""
    return f"{values[k]:.6f}"


def format_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of IoU/Dice (mean ± std), HD95 (in mm, or pixels of the scans, when
    scored there) and label figures per split; for several classes, IoU, Dice and HD95 of the
    organ, then the Dice of each class."""
    scored = [
        m["segmentation"] for m in metrics.values() if "hd95_mean" in m.get("segmentation", {})
    ]
    distances = bool(scored)
    unit = scored[0].get("distance_unit", "px") if scored else "px"
    class_names = next(
        (list(m["segmentation"]["classes"]) for m in metrics.values()
         if "classes" in m.get("segmentation", {})),
        [],
    )  # fmt: skip
    columns = ["split", "images", "IoU", "Dice"] + ([f"HD95 {unit}"] if distances else [])
    columns += [f"Dice {name}" for name in class_names]
    joint = any("classification" in m for m in metrics.values())
    if joint:
        columns += ["AUC", "best AUC", "recall", "precision", "specificity"]
    rows = [columns]
    for split, figures in metrics.items():
        seg = figures.get("segmentation", {})
        row = [
            split,
            str(figures.get("n_images", "")),
            _mean_std(seg.get("iou_mean"), seg.get("iou_std")),
            _mean_std(seg.get("dice_mean"), seg.get("dice_std")),
        ] + (
            [_mean_std(seg.get("hd95_mean"), seg.get("hd95_std"), 2 if unit == "mm" else 1)]
            if distances
            else []
        )
        per_class = seg.get("classes", {})
        row += [
            _mean_std(
                per_class.get(name, {}).get("dice_mean"), per_class.get(name, {}).get("dice_std")
            )
            for name in class_names
        ]
        if joint:
            cls = figures.get("classification", {})
            row += [
                _number(cls.get(k))
                for k in ("auc", "best_auc", "recall", "precision", "specificity")
            ]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"


def _mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
