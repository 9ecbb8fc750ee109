"""K-fold cross-validation by patient: one run folder per fold and a summary across folds.

``out_dir`` receives ``fold-1/`` ... ``fold-K/`` (each a complete run folder, see
:mod:`cervixnet.runs.train`), ``folds.json`` (the patients of every fold's sets),
``summary.json`` and ``summary.csv`` (each fold's test figures, their mean and standard
deviation across folds).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cervixnet import run_folder
from cervixnet.config import Config
from cervixnet.data.manifest import read_manifest
from cervixnet.data.sources import prepared_data, resolve_data
from cervixnet.data.splits import SPLIT_NAMES, cross_validation_splits
from cervixnet.errors import ConfigError, check_output_folder
from cervixnet.fileio import atomic_write_json
from cervixnet.runs.scoring import TrainResult
from cervixnet.runs.train import train
from cervixnet.training.plan import plan_run

# Test-split figures summarised across folds: (name in the summary, section, key).
SUMMARY_FIGURES = (
    ("iou", "segmentation", "iou_mean"),
    ("dice", "segmentation", "dice_mean"),
    ("hd95", "segmentation", "hd95_mean"),
    ("assd", "segmentation", "assd_mean"),
    ("auc", "classification", "auc"),
    ("best_auc", "classification", "best_auc"),
    ("recall", "classification", "recall"),
    ("precision", "classification", "precision"),
    ("specificity", "classification", "specificity"),
)


@dataclasses.dataclass(frozen=True)
class CrossValidationResult:
    """The folds' runs and the summary across them."""

    out_dir: Path
    folds: tuple[TrainResult, ...]
    summary: dict[str, Any]
    seconds: float


def cross_validate(
    config: Config,
    out_dir: str | Path,
    folds: int,
    *,
    cache_root: str | Path | None = None,
    verbose: int | str = "auto",
    echo: Callable[[str], None] = print,
) -> CrossValidationResult:
    """Trains ``config`` on each of ``folds`` patient-level folds and summarises the test sets.

    Each fold's test set is one group of scikit-learn's ``StratifiedGroupKFold``; the
    validation set is drawn from the other patients in the proportion ``data.split`` gives
    val against train. ``data.splits_file`` is refused: the folds define the splits.

    Raises:
        ConfigError, DataError: before any training, as for :func:`train`.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if config.data.splits_file is not None:
        raise ConfigError(
            "data.splits_file cannot be combined with --folds: cross-validation makes its own "
            "splits (each fold's splits.json can be reused for a single run)"
        )
    out_dir = check_output_folder(out_dir)
    source = resolve_data(config, cache_root)
    config, plan = plan_run(config, source)  # one plan for every fold
    if plan is not None:
        echo(plan.format())
    manifest = read_manifest(prepared_data(config, source, cache_root, echo=echo))
    train_share, val_share, _ = config.data.split
    val_fraction = val_share / (train_share + val_share)
    fold_splits = cross_validation_splits(manifest, folds, val_fraction, seed=config.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    if plan is not None:
        atomic_write_json(out_dir / run_folder.PLAN, plan.to_dict())
    (out_dir / run_folder.FOLDS).write_text(
        json.dumps(
            [{name: list(s.patients(name)) for name in SPLIT_NAMES} for s in fold_splits],
            indent=2,
        ),
        encoding="utf-8",
    )
    results = []
    for k, splits in enumerate(fold_splits, start=1):
        echo(f"Fold {k}/{folds}: test on {len(splits.test)} patients")
        keras.backend.clear_session()  # a fresh graph per fold; train() seeds everything
        results.append(
            train(
                config,
                out_dir / f"fold-{k}",
                cache_root=cache_root,
                verbose=verbose,
                echo=echo,
                splits=splits,
            )
        )
    summary = summarize_folds([r.metrics for r in results])
    summary.update({"arch": config.arch, "folds": folds, "seed": config.seed})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_summary_csv(out_dir / "summary.csv", summary)
    return CrossValidationResult(out_dir, tuple(results), summary, time.perf_counter() - started)


def summarize_folds(fold_metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each fold's test figures, and their mean and sample standard deviation across folds.

    Args:
        fold_metrics: the ``metrics.json`` content of each fold's run.

    Returns:
        ``{"per_fold": [{figure: value}], "mean": {figure: value}, "std": {figure: value}}``,
        figures in the order of :data:`SUMMARY_FIGURES`, then for several classes each
        class's Dice (``dice_<class>``) and their mean (``class_dice``); a figure missing from
        every fold (e.g. AUC for a segmentation-only network) is left out, one missing in some
        folds is averaged over the others.
    """
    per_fold, figures = [], [name for name, _, _ in SUMMARY_FIGURES]
    for metrics in fold_metrics:
        test = metrics.get("splits", {}).get("test", {})
        found = {name: test.get(section, {}).get(key) for name, section, key in SUMMARY_FIGURES}
        segmentation = test.get("segmentation", {})
        for name, values in segmentation.get("classes", {}).items():
            found[f"dice_{name}"] = values.get("dice_mean")
        if "classes" in segmentation:
            found["class_dice"] = segmentation.get("class_dice_mean")
        figures += [name for name in found if name not in figures]
        row = {"n_images": test.get("n_images")}
        for name, value in found.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                row[name] = float(value)
        per_fold.append(row)
    mean, std = {}, {}
    for name in figures:
        values = np.array([row[name] for row in per_fold if name in row], dtype=float)
        if values.size:
            mean[name] = float(values.mean())
            std[name] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {"per_fold": per_fold, "mean": mean, "std": std}


def write_summary_csv(path: str | Path, summary: Mapping[str, Any]) -> None:
    """One row per fold, then ``mean`` and ``std`` rows."""
    names = list(summary["mean"])
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fold", "n_images", *names])
        for k, row in enumerate(summary["per_fold"], start=1):
            writer.writerow([k, row.get("n_images", "")] + [_cell(row.get(n)) for n in names])
        for statistic in ("mean", "std"):
            writer.writerow([statistic, ""] + [_cell(summary[statistic].get(n)) for n in names])


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table: each fold's test figures, then mean ± std."""
    names = list(summary["mean"])
    rows = [["fold", "images", *names]]
    for k, row in enumerate(summary["per_fold"], start=1):
        rows.append([str(k), str(row.get("n_images", ""))] + [_cell(row.get(n)) for n in names])
    rows.append(
        ["mean ± std", ""] + [f"{summary['mean'][n]:.3f} ± {summary['std'][n]:.3f}" for n in names]
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
