"""Semi-supervised training by self-training: a teacher, pseudo-labels, a student.

With ``training.semi_supervised.enabled``, ``cervixnet train`` makes three stages in one run
folder, each an ordinary step of cervixnet:

1. **The teacher** (``RUN/teacher/``): a supervised run on the annotated scans, a complete run
   folder of its own (``evaluate`` and ``predict`` read it). Its split is the run's split.
2. **Pseudo-labels** (``RUN/pseudo_labels/``): the teacher's masks of the unannotated scans of
   training patients (``Splits.unannotated_indices``: rows with neither mask nor label, and the
   folder ``data.unlabelled``), predicted as the run scores (test-time flip, the validated
   largest-component step), at the network's input size. Each scan's uncertainty is the share
   of pixels whose most probable class has a probability under 0.9, per pixel of the predicted
   organ; ``keep_fraction`` of the scans, the least uncertain, are kept, as ST++ keeps its
   reliable half (Yang et al., CVPR 2022). ``pseudo_labels.csv`` lists every scan with its
   uncertainty and whether it was kept.
3. **The student** (``RUN/``): the teacher's network, started from the teacher's weights
   (``student_start: teacher``; ``random`` starts anew, as Noisy Student: Xie et al., CVPR
   2020), trained on the annotated training scans and the kept pseudo-labelled ones for the
   teacher's number of optimizer steps, with the annotated scans repeated to make up at
   least ``annotated_share`` of each epoch (half, as semi-supervised segmentation methods
   draw a labelled and an unlabelled batch each step). Augmentation is the noise.
   Pseudo-labelled scans carry no label, so the label loss never sees them. The student is
   scored and its folder completed as any run's; ``metrics.json`` also holds the teacher's
   figures.

Each stage is an ordinary, resumable training, so a killed run resumes exactly
(``cervixnet train --resume RUN``): a finished teacher and written pseudo-labels are kept,
an interrupted teacher or student continues from its last epoch. Nothing in the supervised
path changes, and any Keras backend runs it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import keras
import numpy as np

from cervixnet import run_folder
from cervixnet.config import Config, SemiSupervisedConfig, load_config
from cervixnet.data.sources import resolve_data
from cervixnet.data.splits import Splits
from cervixnet.ensemble import load_postprocessing, segment
from cervixnet.errors import ConfigError, DataError
from cervixnet.fileio import atomic_write_text

TEACHER_DIR = "teacher"
PSEUDO_LABEL_DIR = "pseudo_labels"
PSEUDO_LABEL_TABLE = "pseudo_labels.csv"
# The teacher's weights, beside its pseudo-labels, for a student that starts from them.
TEACHER_WEIGHTS = "teacher.weights.h5"
# A pixel is uncertain when its most probable class is less probable than this.
CONFIDENT_PROBABILITY = 0.9
_COLUMNS = ("image", "patient_id", "uncertainty", "organ_pixels", "kept", "mask")


def is_semi_supervised_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a semi-supervised run interrupted before its student began."""
    run_dir = Path(run_dir)
    return (
        not (run_dir / run_folder.CONFIG).is_file()
        and (run_dir / TEACHER_DIR / run_folder.CONFIG).is_file()
    )


def train_semi_supervised(
    config: Config,
    run_dir: str | Path,
    *,
    cache_root: str | Path | None = None,
    verbose: int | str = "auto",
    echo: Callable[[str], None] = print,
    splits: Splits | None = None,
    resume: bool = False,
):
    """Teacher, pseudo-labels and student into ``run_dir`` (see the module docstring).

    Arguments as ``cervixnet.runs.train``; returns the student's ``TrainResult``.

    Raises:
        ConfigError: ``run_dir`` already holds a run (without ``resume``).
        DataError: no unannotated scan of a training patient to learn from, besides the
            errors of any run.
    """
    from cervixnet.runs.scoring import score_run
    from cervixnet.training.fit import fit_run

    run_dir = Path(run_dir)
    teacher_dir = run_dir / TEACHER_DIR
    if not resume and (teacher_dir.exists() or (run_dir / run_folder.CONFIG).exists()):
        raise ConfigError(
            f"--out {run_dir}: already holds a run; choose a new folder, or continue an "
            "interrupted run with --resume"
        )
    if not resume:
        _check_some_unannotated(config, cache_root)
    options = {"cache_root": cache_root, "verbose": verbose, "echo": echo}
    if (teacher_dir / run_folder.METRICS).is_file():
        echo(f"Teacher: complete in {teacher_dir}")
    else:
        resumed = resume and (teacher_dir / run_folder.CONFIG).is_file()
        if resumed:
            config = load_config(teacher_dir / run_folder.CONFIG)
            splits = Splits.load(teacher_dir / run_folder.SPLITS)
        echo(f"Semi-supervised training, 1 of 3: the teacher, a supervised run, in {teacher_dir}")
        score_run(fit_run(config, teacher_dir, splits=splits, resume=resumed, **options), echo)
    teacher_config = load_config(teacher_dir / run_folder.CONFIG)
    splits = Splits.load(teacher_dir / run_folder.SPLITS)
    pseudo_dir = run_dir / PSEUDO_LABEL_DIR
    if not (pseudo_dir / PSEUDO_LABEL_TABLE).is_file():
        echo(f"Semi-supervised training, 2 of 3: pseudo-labels in {pseudo_dir}")
        write_pseudo_labels(
            teacher_dir,
            teacher_config,
            splits,
            pseudo_dir,
            config.training.semi_supervised.keep_fraction,
            cache_root,
            echo,
        )
    pseudo_labels = read_pseudo_labels(pseudo_dir)

    student_resumed = (run_dir / run_folder.CONFIG).is_file()
    student_config = (
        load_config(run_dir / run_folder.CONFIG)
        if student_resumed
        else student_settings(
            teacher_config, config.training.semi_supervised, pseudo_dir / TEACHER_WEIGHTS
        )
    )
    echo(
        f"Semi-supervised training, 3 of 3: the student, on the annotated scans and "
        f"{len(pseudo_labels)} pseudo-labelled ones, in {run_dir}"
    )
    fitted = fit_run(
        student_config, run_dir, splits=splits, resume=student_resumed,
        pseudo_labels=pseudo_labels, **options,
    )  # fmt: skip
    teacher_metrics = _read_json(teacher_dir / run_folder.METRICS)
    table = _read_table(pseudo_dir)
    return score_run(
        fitted,
        echo,
        extra={
            "semi_supervised": {
                "method": "self-training: teacher, pseudo-labels, student",
                "unannotated_scans": len(table),
                "pseudo_labelled": len(pseudo_labels),
                "keep_fraction": student_config.training.semi_supervised.keep_fraction,
                "teacher": teacher_metrics.get("splits", {}),
            }
        },
    )


def _check_some_unannotated(config: Config, cache_root: str | Path | None) -> None:
    """Refuses, before the teacher trains, a data set with no unannotated scan at all."""
    from cervixnet.data.manifest import read_manifest

    if config.data.unlabelled is not None:
        return  # the folder is checked when it is read
    source = read_manifest(
        resolve_data(config, cache_root), check_files=False,
        mask_column=config.data.mask_column, classes=config.data.classes,
    )  # fmt: skip
    if not any(record.unannotated for record in source.records):
        raise DataError(
            f"{source.source}: semi-supervised training needs unannotated scans, rows with "
            "neither mask nor label (or a folder given by --unlabelled); every row has one"
        )


def student_settings(
    teacher: Config, semi_supervised: SemiSupervisedConfig, teacher_weights: Path
) -> Config:
    """The student's configuration: the teacher's as it ran (planned values included) with the
    run's ``semi_supervised`` settings, for as many optimizer steps as the teacher took when
    they were planned or set; with epochs set by the user, as many epochs (so more steps, over
    more scans). With ``student_start: teacher`` it starts from ``teacher_weights``."""
    changes: dict = {
        f"training.semi_supervised.{key}": value
        for key, value in dataclasses.asdict(semi_supervised).items()
    }
    if isinstance(teacher.training.steps, int):
        changes["training.epochs"] = None
    if semi_supervised.student_start == "teacher":
        changes["model.weights"] = str(teacher_weights)
    return teacher.replace(changes)


def write_pseudo_labels(
    teacher_dir: Path,
    config: Config,
    splits: Splits,
    out_dir: Path,
    keep_fraction: float = 0.5,
    cache_root: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Predicts the unannotated training scans with the teacher and writes their masks and
    ``pseudo_labels.csv`` into ``out_dir`` (see the module docstring); returns the table.

    The folder is written beside its place and renamed into it when complete.

    Raises:
        DataError: there is no unannotated scan of a training patient.
    """
    from cervixnet.evaluation import predict_configured
    from cervixnet.training.fit import run_manifest

    manifest = run_manifest(config, resolve_data(config, cache_root), cache_root)
    positions = splits.unannotated_indices(manifest)
    if not positions:
        raise DataError(
            f"{manifest.source}: semi-supervised training needs unannotated scans (rows with "
            "neither mask nor label, of patients outside val and test, or a folder given by "
            "--unlabelled); there are none"
        )
    model = keras.models.load_model(teacher_dir / run_folder.MODEL)
    predictions = predict_configured(model, config, manifest, positions)
    postprocessing = load_postprocessing(teacher_dir)
    masks, uncertainty, organ = [], [], []
    for probabilities in predictions["mask_prob"]:
        mask = segment(probabilities, postprocessing)
        masks.append(mask)
        organ.append(int(np.count_nonzero(mask)))
        uncertainty.append(pixel_uncertainty(probabilities, organ[-1]))
    kept = choose_reliable(np.array(uncertainty), keep_fraction)
    for number in range(len(masks)):  # empty masks are never kept
        kept[number] &= organ[number] > 0

    for stale in out_dir.parent.glob(f".{out_dir.name}-*"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (staging / "masks").mkdir()
        rows = []
        scale = 255 if len(config.data.classes) == 1 else 1
        for number, position in enumerate(positions):
            record = manifest.records[position]
            name = f"masks/{number:05d}.png"
            cv2.imwrite(str(staging / name), (masks[number] * scale).astype(np.uint8))
            rows.append(
                {
                    "image": str(record.image),
                    "patient_id": record.patient_id,
                    "uncertainty": f"{uncertainty[number]:.6g}",
                    "organ_pixels": str(organ[number]),
                    "kept": str(int(kept[number])),
                    "mask": name,
                }
            )
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(staging / PSEUDO_LABEL_TABLE, buffer.getvalue())
        model.save_weights(staging / TEACHER_WEIGHTS)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    echo(
        f"Pseudo-labels: {int(np.sum(kept))} of {len(positions)} unannotated scans kept "
        f"(the {keep_fraction:.0%} least uncertain with an organ)"
    )
    return out_dir / PSEUDO_LABEL_TABLE


def pixel_uncertainty(probabilities: np.ndarray, organ_pixels: int) -> float:
    """One scan's uncertainty: the pixels whose most probable class (background included) has
    a probability under 0.9, per pixel of the predicted organ; infinite when no organ is
    predicted.

    Args:
        probabilities: ``(H, W)`` of one class, or ``(H, W, K + 1)`` of a softmax.
        organ_pixels: the predicted organ's pixels.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim == 2:
        confidence = np.maximum(probabilities, 1.0 - probabilities)
    else:
        confidence = probabilities.max(axis=-1)
    if organ_pixels == 0:
        return math.inf
    return float(np.count_nonzero(confidence < CONFIDENT_PROBABILITY) / organ_pixels)


def choose_reliable(uncertainty: np.ndarray, keep_fraction: float) -> np.ndarray:
    """Flags the ``ceil(keep_fraction * N)`` least uncertain scans (ties: the earlier first)."""
    count = math.ceil(keep_fraction * len(uncertainty))
    order = np.argsort(uncertainty, kind="stable")
    kept = np.zeros(len(uncertainty), dtype=bool)
    kept[order[:count]] = True
    return kept


def read_pseudo_labels(out_dir: Path) -> dict[str, Path]:
    """The kept pseudo-labels of ``pseudo_labels.csv``: image path -> mask file."""
    return {
        row["image"]: out_dir / row["mask"] for row in _read_table(out_dir) if row["kept"] == "1"
    }


def _read_table(out_dir: Path) -> list[dict[str, str]]:
    path = out_dir / PSEUDO_LABEL_TABLE
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot be read ({error})") from None
    if rows and set(_COLUMNS) - set(rows[0]):
        raise DataError(f"{path}: not a pseudo-label table (columns {sorted(rows[0])})")
    return rows


def _read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8"))
