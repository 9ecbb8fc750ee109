"""The scoring of a fitted run: its kept model on every split, and the choices made on
validation.

:func:`score_run` scores the kept model at each scan's own size on the train, validation and
test splits, and chooses on validation what the run applies later: the largest-component
post-processing (``postprocessing.json``), the label threshold (``operating_point.json``) and
the measurement's logistic models (``markers.json``). It writes ``predictions.csv`` and then
``metrics.json`` last: a run folder with ``metrics.json`` is complete.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cervixnet import run_folder
from cervixnet.config import Config
from cervixnet.data.manifest import Manifest
from cervixnet.data.splits import SPLIT_NAMES
from cervixnet.ensemble import PostprocessingChoice, choose_postprocessing
from cervixnet.errors import DataError
from cervixnet.evaluation import (
    distance_unit,
    pair_spacings,
    predict_configured,
    segmentation_scores,
    source_size_pairs,
    split_metrics,
    write_predictions,
)
from cervixnet.fileio import atomic_write_json
from cervixnet.training.checkpoint import CHECKPOINT_DIR
from cervixnet.training.fit import FittedRun


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a run produced: its folder, per-split figures and the epoch history."""

    run_dir: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    seconds: float


def score_run(
    fitted: FittedRun,
    echo: Callable[[str], None] = print,
    extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Scores the kept model of a fitted run on every split and completes its folder: the
    choices made on validation, ``predictions.csv`` and ``metrics.json`` (with ``extra``'s
    keys added)."""
    config, manifest, run_dir, joint = fitted.config, fitted.manifest, fitted.run_dir, fitted.joint
    evaluated = fitted.evaluated
    best = keras.models.load_model(fitted.best_path)
    risk = _float_column(manifest, "risk")
    per_split, pairs = {}, {}
    for name in SPLIT_NAMES:
        positions, copies = evaluated[name]
        if not positions:
            continue
        predictions = predict_configured(
            best, config, manifest, positions, copies=copies, augment=config.data.augment,
            seed=config.seed,
        )  # fmt: skip
        per_split[name] = (positions, predictions, copies)
        pairs[name] = source_size_pairs(
            manifest,
            positions,
            predictions["mask_prob"],
            config.data.resize,
            copies=copies,
            masks_true=predictions["mask_true"],
        )
    postprocessing = _choose_postprocessing(config, pairs.get("val"), run_dir, echo)
    figures, scores, unit = {}, {}, distance_unit(manifest)
    for name, (positions, predictions, copies) in per_split.items():
        spacings = pair_spacings(manifest, positions, copies) if unit == "mm" else None
        scores[name] = segmentation_scores(pairs[name], postprocessing, spacings=spacings)
        split_risk = None if risk is None else [risk[i] for i in positions]
        figures[name] = split_metrics(
            predictions, risk=split_risk, scores=scores[name], distance_unit=unit,
            class_names=config.data.classes,
        )  # fmt: skip
    write_predictions(
        run_dir / run_folder.PREDICTIONS, manifest, per_split, scores, unit, config.data.classes
    )
    if joint:
        _save_operating_point(per_split.get("val"), run_dir, echo)
        _save_markers(
            manifest, per_split.get("val"), pairs.get("val"), postprocessing, run_dir, echo
        )
    seconds = time.perf_counter() - fitted.started
    summary = {
        "arch": config.arch,
        "parameters": int(best.count_params()),
        "epochs": config.training.epochs,
        "best_epoch": fitted.best_epoch,
        "evaluation": config.data.balance.eval,
        "prepared_data": str(manifest.root),
        "reproducibility": fitted.reproducibility,
        "seconds": round(seconds, 1),
        "splits": figures,
        **(extra or {}),
    }
    atomic_write_json(run_dir / run_folder.METRICS, summary)
    # The run is complete: the state it could have resumed from is no longer needed.
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    fitted.finish()  # a worker's temporary folder; the chief keeps run_dir
    return TrainResult(run_dir, summary, fitted.history, seconds)


def _choose_postprocessing(
    config: Config, val_pairs, run_dir: Path, echo: Callable[[str], None]
) -> PostprocessingChoice | None:
    """Keeps the largest connected component only if it raises the mean validation Dice at
    the scans' own size (nnU-Net's rule; ``evaluation.largest_component: auto``), and saves
    the choice as ``postprocessing.json`` for ``evaluate`` and ``predict``."""
    setting = config.evaluation.largest_component
    if setting == "auto" and val_pairs:
        known = [(t, p) for t, p in val_pairs if t is not None]
        choice = choose_postprocessing([t for t, _ in known], [p for _, p in known])
        echo(
            f"Largest-component post-processing {'on' if choice.largest_component else 'off'}:"
            f" validation Dice {choice.dice_with:.4f} with it, {choice.dice_without:.4f} without"
        )
    elif setting == "auto":
        return None
    else:
        choice = PostprocessingChoice(setting is True, math.nan, math.nan, 0)
    atomic_write_json(run_dir / run_folder.POSTPROCESSING, choice.to_dict())
    return choice


def _save_operating_point(val, run_dir: Path, echo: Callable[[str], None]) -> None:
    """Chooses the label threshold (Youden's J) on the validation predictions already made,
    original images only, for ``predict`` and ``export`` to apply."""
    from cervixnet.analysis import save_operating_point, threshold_from_predictions

    if val is None:
        return
    _, predictions, copies = val
    original = ~np.asarray(copies, dtype=bool)
    try:
        choice = threshold_from_predictions(
            predictions["label"][original], predictions["probability"][original]
        )
    except DataError as error:
        echo(f"No operating threshold saved: {error}")
        return
    save_operating_point(run_dir / run_folder.OPERATING_POINT, choice)


def _save_markers(
    manifest: Manifest,
    val,
    pairs,
    postprocessing: PostprocessingChoice | None,
    run_dir: Path,
    echo: Callable[[str], None],
) -> None:
    """Fits the label on the mask's measurement, alone and with the image model, on the
    validation predictions already made (``markers.json``, for ``evaluate`` and ``predict``)."""
    from cervixnet.evaluation import fit_split_markers

    if val is None:
        return
    positions, predictions, copies = val
    try:
        markers = fit_split_markers(manifest, positions, predictions, pairs, postprocessing, copies)
    except ValueError as error:
        echo(f"No marker models saved: {error}")
        return
    markers.save(run_dir / run_folder.MARKERS)


def _float_column(manifest: Manifest, name: str) -> list[float] | None:
    values = manifest.column(name)
    if all(v is None for v in values):
        return None
    try:
        return [float("nan") if v is None else float(v) for v in values]
    except ValueError:
        return None
