"""The files of a run folder, named in one place.

``cervixnet train`` writes a run folder, ``cervixnet train --folds`` a folder of fold run
folders (``fold-1``, ``fold-2``, ...) beside ``folds.json``; ``evaluate``, ``predict`` and
``export`` read them. Every module takes the names from here; docs/training.md says what each
file holds.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"  # the resolved configuration, headed by the plan as comments
PLAN = "plan.json"  # the plan: fingerprint, device, every planned value and its reason
SPLITS = "splits.json"  # patients and images per split
MODEL = "model.keras"  # the kept model
HISTORY = "history.csv"  # one row per epoch
METRICS = "metrics.json"  # per-split figures of the kept model
PREDICTIONS = "predictions.csv"  # one row per image
OPERATING_POINT = "operating_point.json"  # the label threshold chosen on validation
POSTPROCESSING = "postprocessing.json"  # the post-processing validation kept
MARKERS = "markers.json"  # the label from a measurement, alone and with the image, fitted on val
CHECKPOINT = "checkpoint"  # the state after the last epoch, while a run goes on
LOGS = "logs"  # TensorBoard event files
FOLDS = "folds.json"  # a --folds folder: the fold of every patient

# The files every finished run holds.
RUN_FILES = (CONFIG, SPLITS, MODEL, HISTORY, METRICS)


def fold_folders(path: str | Path) -> list[Path]:
    """The fold run folders (``fold-1``, ``fold-2``, ...) of a ``cervixnet train --folds``
    folder, in fold order; empty for any other path."""
    path = Path(path)
    if not (path / FOLDS).is_file():
        return []
    folds = [p for p in path.glob("fold-*") if (p / MODEL).is_file()]
    return sorted(folds, key=lambda p: int(p.name.split("-")[1]) if p.name[5:].isdigit() else 0)
