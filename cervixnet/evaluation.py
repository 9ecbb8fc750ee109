"""Per-split figures of a trained model: the paper's segmentation and classification tables.

Segmentation is scored per image at the network's input size (mean and std of IoU and Dice
over the images that have a mask); classification over the images that have a label (AUC,
precision, recall, specificity at a threshold). When the manifest carries the synthetic
generator's latent ``risk`` column, the AUC that risk reaches on the same images is reported
as ``best_auc``: no model can do better on average.
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

from cervixnet import metrics as cx_metrics
from cervixnet.config import AugmentConfig
from cervixnet.data.manifest import Manifest
from cervixnet.data.pipeline import make_dataset
from cervixnet.fileio import atomic_path


def predict_records(
    model: keras.Model,
    manifest: Manifest,
    indices: Sequence[int],
    *,
    image_size: Sequence[int],
    channels: int,
    batch_size: int = 8,
    copies: Sequence[bool] | None = None,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    keep_images: bool = False,
) -> dict[str, np.ndarray]:
    """Runs ``model`` over records and returns arrays aligned with ``indices``.

    ``copies`` flags positions that are augmented copies (the paper's balanced evaluation,
    ``cervixnet.data.balance``): those images get ``augment``'s transforms with ``seed``, the
    others are used as they are.

    Returns:
        ``mask_true`` (N, H, W) in {0, 1}, ``has_mask`` (N,), ``mask_prob`` (N, H, W),
        ``label`` (N,) with NaN where unknown, for a joint model ``probability`` (N,), and
        with ``keep_images`` the network inputs ``images`` (N, H, W, C).
    """
    joint = len(model.outputs) == 2
    dataset = make_dataset(
        manifest,
        indices,
        image_size=image_size,
        channels=channels,
        batch_size=batch_size,
        joint=True,
        training=False,
        copies=copies,
        augment=augment,
        seed=seed,
    )
    masks, has_mask, labels, has_label, mask_prob, probability = [], [], [], [], [], []
    inputs = []
    for images, (mask, label), (mask_weight, label_weight) in dataset:
        if keep_images:
            inputs.append(np.asarray(images))
        outputs = model(images, training=False)
        mask_out = outputs[0] if joint else outputs
        masks.append(np.asarray(mask)[..., 0])
        has_mask.append(np.asarray(mask_weight))
        labels.append(np.asarray(label)[:, 0])
        has_label.append(np.asarray(label_weight))
        mask_prob.append(keras.ops.convert_to_numpy(mask_out)[..., 0].astype(np.float32))
        if joint:
            probability.append(keras.ops.convert_to_numpy(outputs[1])[:, 0].astype(np.float32))
    result = {
        "mask_true": np.concatenate(masks),
        "has_mask": np.concatenate(has_mask) > 0,
        "mask_prob": np.concatenate(mask_prob),
        "label": np.where(np.concatenate(has_label) > 0, np.concatenate(labels), np.nan),
    }
    if joint:
        result["probability"] = np.concatenate(probability)
    if keep_images:
        result["images"] = np.concatenate(inputs)
    return result


def split_metrics(
    predictions: Mapping[str, np.ndarray],
    risk: Sequence[float | None] | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Segmentation and (for a joint model) classification figures for one split."""
    has_mask = predictions["has_mask"]
    result: dict[str, Any] = {"n_images": len(has_mask)}
    if has_mask.any():
        result["segmentation"] = cx_metrics.segmentation_summary(
            predictions["mask_true"][has_mask], predictions["mask_prob"][has_mask]
        )
    if "probability" in predictions:
        labels = predictions["label"]
        known = ~np.isnan(labels)
        if known.any():
            summary = cx_metrics.classification_summary(
                labels[known], predictions["probability"][known], threshold=threshold
            )
            if risk is not None:
                summary["best_auc"] = _best_auc(labels[known], np.asarray(risk, float)[known])
            result["classification"] = summary
    return result


def _best_auc(labels: np.ndarray, risk: np.ndarray) -> float | None:
    usable = ~np.isnan(risk)
    if len(set(labels[usable].tolist())) < 2:
        return None
    return float(roc_auc_score(labels[usable], risk[usable]))


def write_predictions(
    path: str | Path,
    manifest: Manifest,
    per_split: Mapping[str, tuple[Sequence[int], Mapping, Sequence[bool]]],
) -> None:
    """Writes one CSV row per image: split, image, patient, label, probability, IoU, Dice.

    ``per_split`` maps a split name to ``(indices, predictions, copies)``; ``copies`` flags
    augmented copies, written in the ``augmented_copy`` column (1 for a copy).
    """
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
                "augmented_copy",
            ]
        )
        for split, (indices, predictions, copies) in per_split.items():
            iou = cx_metrics.iou_per_image(predictions["mask_true"], predictions["mask_prob"])
            dice = cx_metrics.dice_per_image(predictions["mask_true"], predictions["mask_prob"])
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
                        f"{iou[k]:.6f}" if predictions["has_mask"][k] else "",
                        f"{dice[k]:.6f}" if predictions["has_mask"][k] else "",
                        int(bool(copies[k])),
                    ]
                )


def format_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of IoU/Dice (mean ± std) and label figures per split."""
    columns = ["split", "images", "IoU", "Dice"]
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


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"
