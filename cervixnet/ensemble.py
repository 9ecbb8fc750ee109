"""Prediction as the field does it: test-time augmentation, ensembles, uncertainty, cleanup.

NumPy and OpenCV only (no Keras, no TensorFlow): a model enters as a :data:`Run`, any callable
from images to ``(mask probabilities, label probability or None)``, e.g.
``lambda x: (model.predict(x)["mask"], model.predict(x)["label"][:, 0])``.

Typical use, with the post-processing chosen on validation and never on test::

    members = predict_members([run_fold0, run_fold1], images)   # 2 models x 2 flips
    masks_prob, labels_prob = members.mean_mask(), members.mean_probability()
    review_first = np.argsort(-members.uncertainty_scores())
    choice = choose_postprocessing(val_masks_true, val_masks_prob)   # one array per image
    mask = apply_postprocessing(masks_prob[0] > 0.5, choice)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cervixnet import run_folder
from cervixnet.checks import positive_int, unit_interval
from cervixnet.errors import ConfigError

__all__ = [
    "MemberPredictions",
    "PostprocessingChoice",
    "Run",
    "apply_postprocessing",
    "choose_postprocessing",
    "combine_postprocessing",
    "foreground_probability",
    "largest_component",
    "load_postprocessing",
    "predict_members",
    "segment",
]

Run = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""A model call: float32 images (N, H, W, C) -> (mask probabilities (N, H, W, 1), or a softmax
over K classes and the background (N, H, W, K + 1); label probability (N,) or None)."""


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """One image's probability of the organ, any class: ``(H, W)`` probabilities of one
    class as they are, ``1 - p(background)`` of a softmax ``(H, W, K + 1)``."""
    probabilities = np.asarray(probabilities)
    return probabilities if probabilities.ndim == 2 else 1.0 - probabilities[..., 0]


# Members


@dataclass(frozen=True, eq=False)
class MemberPredictions:
    """Every ensemble member's predictions for the same N images.

    A member is one model under one test-time augmentation; :func:`predict_members` orders them
    model by model, the plain pass before the flipped one. Means and standard deviations are
    computed in float64 and returned as float32, so identical members give exactly their own
    masks and a standard deviation of exactly 0.

    Attributes:
        masks: Mask probabilities, shape ``(M, N, H, W)`` for M members, or ``(M, N, H, W,
            K + 1)`` softmax probabilities of K classes; stored as float32.
        probabilities: Label probabilities, shape ``(M, N)``, stored as float32; or None when
            the models have no label head.
    """

    masks: np.ndarray
    probabilities: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", np.asarray(self.masks, dtype=np.float32))
        if self.probabilities is not None:
            probabilities = np.asarray(self.probabilities, dtype=np.float32)
            object.__setattr__(self, "probabilities", probabilities)
        if self.masks.ndim not in (4, 5) or self.masks.shape[0] < 1:
            raise ValueError(
                "`masks` must have shape (members, images, height, width[, classes + 1]) with "
                f"members >= 1. Received: masks.shape={self.masks.shape}"
            )
        if self.probabilities is not None and self.probabilities.shape != self.masks.shape[:2]:
            raise ValueError(
                f"`probabilities` must have shape {self.masks.shape[:2]} (members, images). "
                f"Received: probabilities.shape={self.probabilities.shape}"
            )

    @property
    def classes(self) -> int:
        """The mask's foreground classes: 1, or K of a softmax over ``K + 1`` channels."""
        return 1 if self.masks.ndim == 4 else self.masks.shape[-1] - 1

    def mean_mask(self) -> np.ndarray:
        """The ensemble's mask probabilities, the mean over members, shape ``(N, H, W)``
        (``(N, H, W, K + 1)`` for K classes)."""
        return self.masks.mean(axis=0, dtype=np.float64).astype(np.float32)

    def std_mask(self) -> np.ndarray:
        """Per-pixel population standard deviation over members, ``(N, H, W)`` (per channel
        for K classes); 0 for one."""
        return self.masks.std(axis=0, dtype=np.float64).astype(np.float32)

    def mean_probability(self) -> np.ndarray | None:
        """The ensemble's label probability, the mean over members, ``(N,)``; or None."""
        if self.probabilities is None:
            return None
        return self.probabilities.mean(axis=0, dtype=np.float64).astype(np.float32)

    def uncertainty_scores(self, threshold: float = 0.5) -> np.ndarray:
        """How much the members disagree about each image's structure, float64 ``(N,)``.

        The mean of :meth:`std_mask` over the pixels that any member marks as foreground
        (probability > ``threshold``); 0.0 for an image where no member marks any pixel.
        For K classes, the foreground probability is ``1 - p(background)``.
        Averaging over the candidate structure rather than the whole image keeps a large,
        confidently empty background from hiding disagreement, so sorting by descending score
        ranks the images most worth a human look first.

        Args:
            threshold: In [0, 1]. Defaults to 0.5.
        """
        threshold = unit_interval("threshold", threshold)
        if self.classes == 1:
            masks, spread = self.masks, self.std_mask()
        else:  # the organ's probability, 1 - p(background)
            masks = 1.0 - self.masks[..., 0]
            spread = masks.std(axis=0, dtype=np.float64).astype(np.float32)
        foreground = (masks > threshold).any(axis=0)
        total = np.where(foreground, spread, 0.0).sum(axis=(1, 2))
        count = foreground.sum(axis=(1, 2))
        return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _run_batches(
    run: Run, images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Calls ``run`` batch by batch; returns masks ``(N, h, w)`` (``(N, h, w, K + 1)`` for K
    classes) and probabilities or None."""
    masks, probabilities = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        mask, probability = run(batch)
        mask = np.asarray(mask, dtype=np.float32)
        if mask.ndim != 4 or mask.shape[0] != len(batch) or mask.shape[3] == 2:
            raise ValueError(
                f"A run must return masks of shape ({len(batch)}, height, width, 1), or "
                f"(..., classes + 1) for 2 or more classes, for {len(batch)} images. "
                f"Received: mask.shape={mask.shape}"
            )
        masks.append(mask[..., 0] if mask.shape[3] == 1 else mask)
        if probability is not None:
            probability = np.asarray(probability, dtype=np.float32).ravel()
            if probability.size != len(batch):
                raise ValueError(
                    f"A run must return one label probability per image ({len(batch)}). "
                    f"Received: {probability.size}"
                )
        probabilities.append(probability)
    if all(p is None for p in probabilities):
        return np.concatenate(masks), None
    if any(p is None for p in probabilities):
        raise ValueError(
            "A run must return label probabilities for every batch or for none. Received: "
            f"{sum(p is None for p in probabilities)} of {len(probabilities)} batches without"
        )
    return np.concatenate(masks), np.concatenate(probabilities)


def predict_members(
    runs: Sequence[Run],
    images: np.ndarray,
    *,
    horizontal_flip: bool = True,
    batch_size: int = 8,
) -> MemberPredictions:
    """Predicts with every model, plain and (optionally) left-right flipped.

    The flipped pass predicts on ``images[:, :, ::-1]`` and flips its masks back, so every
    member's masks align with ``images``; its label probabilities are kept as they are.

    Args:
        runs: One or more model calls (:data:`Run`).
        images: Shape ``(N, H, W, C)``, N >= 1; cast to float32.
        horizontal_flip: Add each model's flipped pass as a member. Defaults to True.
        batch_size: Images per call, >= 1. Defaults to 8.

    Returns:
        :class:`MemberPredictions` with ``M = len(runs) * (2 if horizontal_flip else 1)``
        members, ordered ``[run0, run0 flipped, run1, ...]``; probabilities are None if the
        runs return None.

    Raises:
        ValueError: On no run, images not 4-D or empty, batch_size < 1, a run returning a
            mask or probabilities of the wrong shape, or runs disagreeing on returning
            probabilities.
    """
    if len(runs) == 0:
        raise ValueError("`runs` must hold at least one model call. Received: 0 runs")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            "`images` must have shape (N, H, W, C) with N >= 1. "
            f"Received: images.shape={images.shape}"
        )
    batch_size = positive_int("batch_size", batch_size)

    flipped = np.ascontiguousarray(images[:, :, ::-1]) if horizontal_flip else None
    masks, probabilities = [], []
    for run in runs:
        mask, probability = _run_batches(run, images, batch_size)
        masks.append(mask)
        probabilities.append(probability)
        if flipped is not None:
            mask, probability = _run_batches(run, flipped, batch_size)
            masks.append(mask[:, :, ::-1])
            probabilities.append(probability)
    if any(p is None for p in probabilities) and not all(p is None for p in probabilities):
        raise ValueError(
            "Every run must return label probabilities, or none. Received: "
            f"{sum(p is None for p in probabilities)} of {len(probabilities)} members without"
        )
    return MemberPredictions(
        masks=np.stack(masks),
        probabilities=None if probabilities[0] is None else np.stack(probabilities),
    )


# Post-processing


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keeps only the largest 8-connected foreground component.

    Args:
        mask: Shape ``(H, W)``; nonzero is foreground.

    Returns:
        A bool mask, shape ``(H, W)``; empty if ``mask`` is. Among equally large components,
        the one whose first pixel comes first in row-major order.

    Raises:
        ValueError: If ``mask`` is not 2-D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must have shape (H, W). Received: mask.shape={mask.shape}")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (mask != 0).astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


@dataclass(frozen=True)
class PostprocessingChoice:
    """Whether to keep only the largest component, and the validation figures behind it.

    Attributes:
        largest_component: True if :func:`largest_component` is applied to predicted masks.
        dice_without: Mean Dice over the validation images without it (NaN for no image).
        dice_with: Mean Dice over the validation images with it (NaN for no image).
        images: Number of validation images.
    """

    largest_component: bool
    dice_without: float
    dice_with: float
    images: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; NaN becomes None (JSON null)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "largest_component": self.largest_component,
            "dice_without": number(self.dice_without),
            "dice_with": number(self.dice_with),
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> PostprocessingChoice:
        """The inverse of :meth:`to_dict`; None becomes NaN."""

        def number(value: float | None) -> float:
            return math.nan if value is None else float(value)

        return cls(
            largest_component=bool(config["largest_component"]),
            dice_without=number(config["dice_without"]),
            dice_with=number(config["dice_with"]),
            images=int(config["images"]),
        )


def _dice(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two bool masks; 1.0 when both are empty."""
    total = np.count_nonzero(truth) + np.count_nonzero(prediction)
    return 2.0 * np.count_nonzero(truth & prediction) / total if total else 1.0


def choose_postprocessing(
    masks_true: Sequence[np.ndarray], masks_prob: Sequence[np.ndarray], threshold: float = 0.5
) -> PostprocessingChoice:
    """Keeps the largest component only where validation shows it helps (nnU-Net's rule).

    Compares the mean Dice over images of ``prob > threshold`` with and without
    :func:`largest_component`, and keeps it only if it is strictly higher.

    Args:
        masks_true: One truth mask per validation image, shape ``(H_i, W_i)``; positive where
            > 0.5 (every class of a class-id mask). Sizes may differ between images.
        masks_prob: The matching mask probabilities, same shapes, positive where
            > ``threshold``; or softmax probabilities ``(H_i, W_i, K + 1)`` of K classes,
            positive where a class beats the background (:func:`segment`).
        threshold: In [0, 1]. Defaults to 0.5.

    Returns:
        A :class:`PostprocessingChoice`; for no image, ``largest_component=False`` and NaN Dice.

    Raises:
        ValueError: On sequences of different lengths, a mask that is not 2-D, a pair of
            different shapes, or ``threshold`` out of range.
    """
    threshold = unit_interval("threshold", threshold)
    if len(masks_true) != len(masks_prob):
        raise ValueError(
            "`masks_true` and `masks_prob` must hold one mask per image each. "
            f"Received: {len(masks_true)} and {len(masks_prob)} masks"
        )
    without, with_ = [], []
    for index, (truth, probability) in enumerate(zip(masks_true, masks_prob, strict=True)):
        truth, probability = np.asarray(truth), np.asarray(probability)
        if truth.ndim != 2 or truth.shape != probability.shape[:2] or probability.ndim > 3:
            raise ValueError(
                "Each truth and probability mask must be 2-D (or H x W x classes) and of one "
                f"size. Received: image {index} with shapes {truth.shape} and "
                f"{probability.shape}"
            )
        truth, prediction = truth > 0.5, segment(probability, None, threshold) > 0
        without.append(_dice(truth, prediction))
        with_.append(_dice(truth, largest_component(prediction)))
    if not without:
        return PostprocessingChoice(False, math.nan, math.nan, 0)
    dice_without, dice_with = float(np.mean(without)), float(np.mean(with_))
    return PostprocessingChoice(dice_with > dice_without, dice_without, dice_with, len(without))


def segment(
    probabilities: np.ndarray,
    postprocessing: PostprocessingChoice | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """One image's predicted mask as uint8 class ids ``(H, W)``, post-processed.

    ``probabilities`` ``(H, W)`` of one class give ``probability > threshold`` (0 or 1);
    ``(H, W, K + 1)`` of K classes give each pixel its most probable class. The validated
    ``postprocessing`` (:func:`choose_postprocessing`) then cleans the organ, every class
    together.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 2:
        ids = (probabilities > threshold).astype(np.uint8)
    elif probabilities.ndim == 3 and probabilities.shape[-1] >= 3:
        ids = np.argmax(probabilities, axis=-1).astype(np.uint8)
    else:
        raise ValueError(
            "`probabilities` must have shape (H, W), or (H, W, K + 1) for K >= 2 classes. "
            f"Received: probabilities.shape={probabilities.shape}"
        )
    if postprocessing is None or not postprocessing.largest_component:
        return ids
    return np.where(apply_postprocessing(ids > 0, postprocessing), ids, 0).astype(np.uint8)


def apply_postprocessing(mask: np.ndarray, choice: PostprocessingChoice | None) -> np.ndarray:
    """Applies a validated choice to one binary mask.

    Args:
        mask: Shape ``(H, W)``; nonzero is foreground (e.g. ``probability > 0.5``).
        choice: From :func:`choose_postprocessing`; None leaves the mask as it is.

    Returns:
        A bool mask, shape ``(H, W)``.

    Raises:
        ValueError: If ``mask`` is not 2-D.
    """
    if choice is not None and choice.largest_component:
        return largest_component(mask)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must have shape (H, W). Received: mask.shape={mask.shape}")
    return mask != 0


def load_postprocessing(run_dir: str | Path) -> PostprocessingChoice | None:
    """The run's validated post-processing (``postprocessing.json``), or ``None``."""
    path = Path(run_dir) / run_folder.POSTPROCESSING
    if not path.is_file():
        return None
    try:
        return PostprocessingChoice.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a post-processing choice ({error})") from None


def combine_postprocessing(
    choices: Sequence[PostprocessingChoice | None],
) -> PostprocessingChoice | None:
    """The post-processing of an ensemble of runs (the folds of ``--folds``): the largest
    component kept when most runs' validation kept it, the Dice figures averaged, the images
    summed; None when no run chose."""
    chosen = [c for c in choices if c is not None]
    if not chosen:
        return None
    return PostprocessingChoice(
        largest_component=2 * sum(c.largest_component for c in chosen) > len(chosen),
        dice_without=float(np.mean([c.dice_without for c in chosen])),
        dice_with=float(np.mean([c.dice_with for c in chosen])),
        images=sum(c.images for c in chosen),
    )


def check_fold_members(
    folders: Sequence[Path],
    inputs: Sequence[tuple[Sequence[int], int]],
    outputs: Sequence[Sequence[str]],
) -> None:
    """Checks that the fold models of a ``--folds`` folder can be averaged: every fold's input
    (``(image_size, channels)``) and output names those of the first fold.

    Raises:
        ConfigError: naming the first fold that differs, and what each has.
    """
    first_input, first_outputs = (list(inputs[0][0]), inputs[0][1]), sorted(outputs[0])
    for folder, (size, channels), names in zip(folders, inputs, outputs, strict=True):
        if (list(size), channels) != first_input or sorted(names) != first_outputs:
            raise ConfigError(
                f"{folder}: input {list(size)} x {channels} and outputs {sorted(names)} differ "
                f"from {Path(folders[0]).name}'s {first_input[0]} x {first_input[1]} and "
                f"{first_outputs}; the folds cannot be averaged"
            )
