"""``cervixnet evaluate``: the paper's tables with intervals, an operating point, figures.

:func:`evaluate_run` scores a trained run on one split (or all) of its own data, or on
another data set:

- the **operating threshold** is chosen on the run's **validation** split (Youden's J by
  default, or a target sensitivity or false positive rate, or a fixed value) and applied
  unchanged to the evaluated split, so the test data cannot move it;
- segmentation: per-image IoU, Dice, 95th-percentile Hausdorff distance and average
  symmetric surface distance at each scan's own size (distances in its pixels), with the
  run's test-time augmentation and validated post-processing, mean and standard deviation;
- classification: AUC, average precision, recall (sensitivity), precision, specificity,
  false positive rate, F1, accuracy, Brier score and the confusion matrix at that threshold;
- 95 % confidence intervals for every figure by bootstrap over **patients**;
- calibration: a reliability curve;
- on synthetic data, the AUC of the generator's latent risk on the same images.

It writes ``report.json``, ``report.md``, ``predictions.csv`` and figures as PNG and PDF
(``cervixnet.figures``: ROC curve with its patient-bootstrap band and the operating point,
precision-recall curve, confusion matrix, calibration, training curves, segmentation overlays
of the best, median and worst images), and Grad-CAM overlays for a sample of images of the
joint model.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from cervixnet import analysis, clinical, models, run_folder
from cervixnet.config import Config, load_config
from cervixnet.data.manifest import Manifest, read_manifest
from cervixnet.data.sources import prepared_data, resolve_data
from cervixnet.data.splits import SPLIT_NAMES, Splits
from cervixnet.ensemble import (
    check_fold_members,
    combine_postprocessing,
    load_postprocessing,
)
from cervixnet.errors import ConfigError, DataError, inside_folder
from cervixnet.evaluation import (
    SEGMENTATION_SCORES,
    distance_unit,
    measure_pairs,
    pair_spacings,
    predict_configured,
    segmentation_scores,
    source_size_pairs,
)
from cervixnet.model_file import load_keras_model

EVALUATED_SPLITS = (*SPLIT_NAMES, "all")
# Figures that get a bootstrap interval, and the table rows they appear in.
SEGMENTATION_FIGURES = SEGMENTATION_SCORES
CLASSIFICATION_FIGURES = (
    "auc",
    "average_precision",
    "recall",
    "precision",
    "specificity",
    "false_positive_rate",
    "f1",
    "accuracy",
    "brier",
)


# Draws class-activation overlays: (model, images (N, H, W, C) in [0, 1]) -> N uint8 BGR images.
Explainer = Callable[[keras.Model, np.ndarray], Sequence[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_run` wrote and found."""

    out_dir: Path
    report: dict[str, Any]
    files: tuple[Path, ...]


def load_run(run_dir: str | Path, *, unsafe: bool = False) -> tuple[Config, keras.Model, Path]:
    """The configuration and best model of a run folder written by ``cervixnet train``.

    The model is loaded in Keras' safe mode; ``unsafe`` lets a ``model.keras`` that holds
    Python code (a ``Lambda`` layer) load and run it (``cervixnet.model_file``).

    Raises:
        UnsafeModelError: ``model.keras`` holds Python code and ``unsafe`` is false.
        ConfigError: the folder is not a run folder, or its model is not a cervixnet model.
    """
    run_dir = Path(run_dir)
    missing = [n for n in (run_folder.CONFIG, run_folder.MODEL) if not (run_dir / n).is_file()]
    if missing and (run_dir / run_folder.FOLDS).is_file():
        raise ConfigError(
            f"{run_dir}: a cross-validation folder; evaluate one fold's run (e.g. "
            f"{run_dir / 'fold-1'}) on its own test patients, or the fold models averaged on "
            "scans of other patients (--data)"
        )
    if missing:
        raise ConfigError(
            f"{run_dir}: not a cervixnet run folder (missing {', '.join(missing)}); pass the "
            "folder `cervixnet train` wrote"
        )
    config = load_config(run_dir / run_folder.CONFIG)
    model = load_keras_model(run_dir / run_folder.MODEL, unsafe=unsafe)
    return config, model, run_dir


def choose_operating_point(
    model: keras.Model,
    config: Config,
    manifest: Manifest,
    val_indices: Sequence[int],
    rule: str = "youden",
    target: float | None = None,
) -> analysis.ThresholdChoice:
    """The label threshold chosen on the validation images by ``rule``.

    Raises:
        DataError: the validation split lacks labelled images of both classes.
    """
    labelled = [i for i in val_indices if manifest.records[i].label is not None]
    if not labelled:
        raise DataError(
            f"{manifest.source}: the validation split has no labelled image to choose the "
            "operating threshold on"
        )
    predictions = predict_configured(model, config, manifest, labelled)
    return analysis.threshold_from_predictions(
        predictions["label"], predictions["probability"], rule, target
    )


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "test",
    out_dir: str | Path | None = None,
    threshold_rule: str = "youden",
    target: float | None = None,
    n_bootstrap: int = 1000,
    gradcam_images: int = 4,
    cache_root: str | Path | None = None,
    echo: Callable[[str], None] = print,
    unsafe: bool = False,
    explain: Explainer | None = None,
) -> EvaluationResult:
    """Scores a run and writes its report (see the module docstring).

    Args:
        run_dir: a folder written by ``cervixnet train``; or by ``cervixnet train --folds``,
            with ``data`` of other patients: the fold models are averaged, the threshold is
            the mean of the folds' (each chosen on its validation split) and the
            largest-component step is kept when most folds kept it.
        data: another data folder to evaluate on. Its rows whose patients are in the run's
            split keep their set; with none of them, every row is evaluated (split
            ``external``). Default: the run's own data.
        split: ``test``, ``val``, ``train`` or ``all``.
        out_dir: where to write; default ``RUN_DIR/evaluation-<split>`` (``-2``, ``-3``...
            when taken).
        threshold_rule: ``youden``, ``sensitivity``, ``fpr`` or ``fixed``
            (``cervixnet.analysis.choose_threshold``), applied to the validation split.
        target: the rule's target (sensitivity, false positive rate or threshold).
        n_bootstrap: resamples of patients for the 95 % intervals.
        gradcam_images: class-activation overlays for this many evaluated images (joint model
            only, with ``explain``).
        cache_root: where prepared data is cached.
        echo: receives one-line progress messages.
        unsafe: load a ``model.keras`` that holds Python code (see :func:`load_run`).
        explain: draws the overlays: ``fn(model, images (N, H, W, C)) -> N images`` (uint8
            BGR), e.g. ``cervixnet.explain.gradcam_overlays`` (what ``cervixnet evaluate``
            passes). None: no overlays.

    Raises:
        ConfigError, DataError: a bad option, run folder or data set.
    """
    if split not in EVALUATED_SPLITS:
        raise ConfigError(
            f"--split must be one of {', '.join(EVALUATED_SPLITS)}. Received: {split!r}"
        )
    if threshold_rule not in analysis.THRESHOLD_RULES:
        raise ConfigError(
            f"--threshold-rule must be one of {', '.join(analysis.THRESHOLD_RULES)}. "
            f"Received: {threshold_rule!r}"
        )
    folds = run_folder.fold_folders(run_dir)
    if folds and data is None:
        raise ConfigError(
            f"{run_dir}: a cross-validation folder, whose fold models saw all its patients; "
            f"evaluate one fold's run (e.g. {Path(run_dir) / 'fold-1'}) on its own test "
            "patients, or the fold models averaged on scans of other patients (--data)"
        )
    runs = [load_run(folder, unsafe=unsafe) for folder in (folds or [run_dir])]
    config, model, run_dir = runs[0][0], runs[0][1], Path(run_dir)
    fold_models = [run_model for _, run_model, _ in runs]
    check_fold_members(
        [folder for _, _, folder in runs],
        [(c.data.image_size, c.data.channels) for c, _, _ in runs],
        [m.output_names for m in fold_models],
    )
    joint = models.has_label(model)
    run_splits = [Splits.load(folder / run_folder.SPLITS) for _, _, folder in runs]
    splits = run_splits[0]
    own = _manifest(config, None, cache_root, echo)
    own_indices = splits.indices(own)
    if data is None:
        manifest, indices = own, own_indices
    else:
        manifest = _manifest(config, data, cache_root, echo)
        indices = _external_indices(manifest, splits)
        if folds and "external" not in indices:
            raise ConfigError(
                f"{manifest.source}: holds patients of {run_dir}'s data set, on which the fold "
                "models were trained; evaluate fold models averaged on scans of other patients"
            )
    evaluated = (
        indices["external"]
        if "external" in indices
        else (
            sorted(i for name in SPLIT_NAMES for i in indices[name])
            if split == "all"
            else indices[split]
        )
    )
    split_name = "external" if "external" in indices else split
    if not evaluated:
        raise DataError(f"{manifest.source}: the {split_name} split holds no image")

    choice = None
    if joint:
        try:
            choices = [
                choose_operating_point(
                    run_model, run_config, own, fold_splits.indices(own)["val"], threshold_rule,
                    target,
                )
                for (run_config, run_model, _), fold_splits in zip(runs, run_splits, strict=True)
            ]  # fmt: skip
        except ValueError as error:
            raise ConfigError(f"--threshold-rule {threshold_rule}: {error}") from None
        choice = choices[0] if len(choices) == 1 else _mean_choice(choices)
        chosen_on = (
            f"{len(own_indices['val'])} validation images"
            if len(choices) == 1
            else f"each fold's validation images, the mean of {len(choices)} folds'"
        )
        echo(
            f"Operating threshold {choice.threshold:.3f} ({threshold_rule}"
            + (f", target {target:g}" if target is not None else "")
            + f") chosen on {chosen_on}: sensitivity "
            f"{choice.sensitivity:.3f}, specificity {choice.specificity:.3f}"
        )

    averaged = f" with {len(fold_models)} fold models averaged" if folds else ""
    echo(f"Evaluating {len(evaluated)} images of the {split_name} split{averaged}")
    predictions = predict_configured(fold_models, config, manifest, evaluated, keep_images=True)
    patients = np.array([manifest.records[i].patient_id for i in evaluated])
    risk = _float_column(manifest, "risk", evaluated)
    postprocessing = combine_postprocessing([load_postprocessing(f) for _, _, f in runs])
    unit = distance_unit(manifest)
    pairs = source_size_pairs(manifest, evaluated, predictions["mask_prob"], config.data.resize)
    spacings = pair_spacings(manifest, evaluated) if unit == "mm" else None
    per_image = segmentation_scores(pairs, postprocessing, spacings=spacings)
    measured = measure_pairs(pairs, spacings, postprocessing)
    report = build_report(
        predictions, patients, choice, risk=risk, n_bootstrap=n_bootstrap, seed=config.seed,
        per_image=per_image, distance_unit=unit, class_names=config.data.classes,
    )  # fmt: skip
    # A --folds ensemble has no one validation fit of the measurement's logistic models.
    markers = None if folds else clinical.load_markers(run_dir / run_folder.MARKERS)
    references = {name: _reference_column(manifest, name, evaluated) for name in measured}
    millimetres = clinical.measurement_figures(
        measured, {k: v for k, v in references.items() if v is not None}, patients,
        predictions["label"], predictions.get("probability"), markers,
        n_resamples=n_bootstrap, seed=config.seed,
    )  # fmt: skip
    report.update(_without_nan(millimetres))
    report.update(
        {
            "run": str(run_dir),
            "models": len(fold_models),
            "arch": config.arch,
            "data": str(manifest.root),
            "split": split_name,
        }
    )

    out_dir = _free_folder(Path(out_dir) if out_dir else run_dir / f"evaluation-{split_name}")
    # Written into a hidden folder beside it, renamed when complete: a killed evaluation
    # leaves no half report (only the hidden folder, replaced by the next evaluation).
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        files = _write_outputs(
            staging, report, predictions, per_image, manifest, evaluated, choice, run_dir,
            model, gradcam_images if explain is not None else 0, config.seed, explain,
            measured, references,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(out_dir)
    files = [out_dir / f.relative_to(staging) for f in files]
    return EvaluationResult(out_dir, report, tuple(files))


def build_report(
    predictions: Mapping[str, np.ndarray],
    patients: np.ndarray,
    choice: analysis.ThresholdChoice | None,
    *,
    risk: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    per_image: Mapping[str, np.ndarray] | None = None,
    distance_unit: str = "px",
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Figures with patient-bootstrap 95 % intervals from the arrays of ``predict_records``.

    ``per_image`` is the per-image ``segmentation_scores`` of the same predictions at each
    scan's own size, its distances in ``distance_unit`` (``"mm"`` or ``"px"``); without it
    the masks are scored at the network's input size (:func:`per_image_segmentation`).
    With several classes (``class_names``, ``data.classes``) the segmentation also holds
    ``iou_<class>``, ``dice_<class>`` and ``class_dice`` (the mean of an image's class
    Dice), each with its interval, and ``classes``, the names.

    Returns:
        ``{"segmentation": {...}, "classification": {...}, "calibration": {...},
        "operating_point": {...}}``; each figure as ``{"value", "ci_low", "ci_high"}``;
        sections without data are left out.
    """
    report: dict[str, Any] = {"n_images": len(patients), "n_patients": len(set(patients))}
    has_mask = predictions["has_mask"]
    if has_mask.any():
        per_image_given = per_image is not None
        if per_image is None:
            per_image = per_image_segmentation(predictions)
        columns = {name: np.asarray(per_image[name]) for name in SEGMENTATION_FIGURES}
        names = []
        if "class_dice" in per_image:
            class_dice, class_iou = (np.asarray(per_image[k]) for k in ("class_dice", "class_iou"))
            count = class_dice.shape[1]
            names = list(class_names or [f"class_{k}" for k in range(1, count + 1)])
            for k, name in enumerate(names):
                columns[f"iou_{name}"], columns[f"dice_{name}"] = class_iou[:, k], class_dice[:, k]
            columns["class_dice"] = class_dice.mean(axis=1)
        columns = {name: values[has_mask] for name, values in columns.items()}

        def segmentation(*values):
            return {
                name: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
                for name, v in zip(columns, values, strict=True)
            }

        point = segmentation(*columns.values())
        intervals = analysis.bootstrap_intervals(
            segmentation, patients[has_mask], *columns.values(), n_resamples=n_bootstrap,
            seed=seed,
        )  # fmt: skip
        report["segmentation"] = {
            "n_images": int(has_mask.sum()),
            "distance_unit": distance_unit if per_image_given else "px",
            **{
                name: _figure(point[name], intervals[name], std=float(np.nanstd(values)))
                for name, values in columns.items()
            },
            **({"classes": names} if names else {}),
        }
    if choice is not None and "probability" in predictions:
        labels, probability = predictions["label"], predictions["probability"]
        known = ~np.isnan(labels)
        if known.any():
            figures = analysis.binary_figures(labels[known], probability[known], choice.threshold)

            def classification(y, p):
                return analysis.binary_figures(y, p, choice.threshold)

            intervals = analysis.bootstrap_intervals(
                classification, patients[known], labels[known], probability[known],
                n_resamples=n_bootstrap, seed=seed,
            )  # fmt: skip
            report["classification"] = {
                "n_images": int(known.sum()),
                "n_preterm": int(figures["n_positive"]),
                "confusion_matrix": figures["confusion_matrix"],
                **{
                    name: _figure(figures[name], intervals.get(name))
                    for name in CLASSIFICATION_FIGURES
                },
            }
            if risk is not None and np.isfinite(risk[known]).all():
                y = labels[known]
                if 0 < y.sum() < len(y):
                    from sklearn.metrics import roc_auc_score

                    report["classification"]["best_auc"] = float(roc_auc_score(y, risk[known]))
            curve = analysis.reliability_curve(labels[known], probability[known])
            report["calibration"] = {
                key: (value.tolist() if isinstance(value, np.ndarray) else value)
                for key, value in curve.items()
            }
        report["operating_point"] = {**dataclasses.asdict(choice), "chosen_on": "val"}
    return report


def per_image_segmentation(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """IoU, Dice, HD95 and ASSD of every image at the network's input size (distances in its
    pixels), ``(N,)`` each (NaN without a mask). ``evaluate_run`` scores at each scan's own
    size instead (``cervixnet.evaluation.segmentation_scores`` of ``source_size_pairs``)."""
    truth, prob = predictions["mask_true"], predictions["mask_prob"]
    several = np.ndim(prob) == 4  # class ids, or 0/1
    pairs = [
        (np.rint(t).astype(np.uint8) if several else t > 0.5, p)
        for t, p in zip(truth, prob, strict=True)
    ]
    scores = segmentation_scores(pairs)
    return {name: np.where(predictions["has_mask"], v, np.nan) for name, v in scores.items()}


def format_report(report: Mapping[str, Any]) -> str:
    """The report as Markdown: tables of figures with their 95 % intervals."""
    lines = [
        f"# Evaluation of {report.get('arch', 'the model')} on the {report.get('split')} split",
        "",
        f"{report['n_images']} images of {report['n_patients']} patients"
        + (f" from {report['data']}" if report.get("data") else "")
        + ". Intervals: 95 % bootstrap over patients.",
        "",
    ]
    segmentation = report.get("segmentation")
    if segmentation:
        in_mm = segmentation.get("distance_unit") == "mm"
        unit = "mm" if in_mm else "pixels"
        lines += [
            "## Segmentation",
            "",
            f"Per image at each scan's own size, over {segmentation['n_images']} images "
            "with a mask; distances "
            + ("in mm (the manifest's pixel spacing)." if in_mm else "in the scan's pixels."),
            "",
            "| figure | mean ± std | 95 % CI |",
            "|---|---|---|",
        ]
        names = {
            "iou": "IoU",
            "dice": "Dice",
            "hd95": f"Hausdorff 95 % ({unit})",
            "assd": f"Average symmetric surface distance ({unit})",
        }
        for key in SEGMENTATION_FIGURES:
            f = segmentation[key]
            lines.append(f"| {names[key]} | {_num(f['value'])} ± {_num(f.get('std'))} | {_ci(f)} |")
        lines.append("")
        if segmentation.get("classes"):
            lines += [
                "Per class (the rows above score the whole organ, every class against the "
                "background):",
                "",
                "| class | IoU mean ± std | 95 % CI | Dice mean ± std | 95 % CI |",
                "|---|---|---|---|---|",
            ]
            for name in segmentation["classes"]:
                iou, dice = segmentation[f"iou_{name}"], segmentation[f"dice_{name}"]
                lines.append(
                    f"| {name} | {_num(iou['value'])} ± {_num(iou.get('std'))} | {_ci(iou)} | "
                    f"{_num(dice['value'])} ± {_num(dice.get('std'))} | {_ci(dice)} |"
                )
            mean = segmentation["class_dice"]
            lines += [
                f"| mean of the classes | | | {_num(mean['value'])} ± {_num(mean.get('std'))} "
                f"| {_ci(mean)} |",
                "",
            ]
    classification = report.get("classification")
    if classification:
        point = report["operating_point"]
        rule = point["rule"] + (f", target {point['target']:g}" if point.get("target") else "")
        lines += [
            "## Classification",
            "",
            f"Operating threshold {point['threshold']:.3f}, chosen on the validation split by "
            f"{rule} (sensitivity {point['sensitivity']:.3f}, specificity "
            f"{point['specificity']:.3f} there) and applied unchanged here. "
            f"{classification['n_images']} labelled images, {classification['n_preterm']} "
            "preterm.",
            "",
            "| figure | value | 95 % CI |",
            "|---|---|---|",
        ]
        names = {
            "auc": "AUC",
            "average_precision": "average precision",
            "recall": "recall (sensitivity)",
            "precision": "precision",
            "specificity": "specificity",
            "false_positive_rate": "false positive rate",
            "f1": "F1",
            "accuracy": "accuracy",
            "brier": "Brier score",
        }
        for key in CLASSIFICATION_FIGURES:
            lines.append(f"| {names[key]} | {_num(classification[key]['value'])} | "
                         f"{_ci(classification[key])} |")  # fmt: skip
        if "best_auc" in classification:
            lines.append(
                f"| best possible AUC (generator's risk) | {_num(classification['best_auc'])} | |"
            )
        cm = classification["confusion_matrix"]
        lines += [
            "",
            "Confusion matrix (rows: true class; columns: predicted class):",
            "",
            "| | predicted preterm | predicted control |",
            "|---|---:|---:|",
            f"| **preterm** | {cm['tp']} | {cm['fn']} |",
            f"| **control** | {cm['fp']} | {cm['tn']} |",
            "",
        ]
    lines += _millimetre_sections(report)
    return "\n".join(lines) + "\n"


def _interval(low: float | None, high: float | None, digits: int = 2) -> str:
    if low is None or high is None:
        return "n/a"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _millimetre_sections(report: Mapping[str, Any]) -> list[str]:
    """Markdown of the measurements, their agreement with the reference, and the label
    predicted by the measurement, the image model and both."""
    measurements = report.get("measurements") or {}
    lines: list[str] = []
    if measurements:
        lines += [
            "## Measurements",
            "",
            "Of the predicted masks at each scan's own size (cervixnet.measure), in mm where the "
            "manifest gives the pixel spacing. Against a reference column of the same name: "
            "mean absolute error, bias (measured - reference) and 95 % limits of agreement, "
            "with 95 % bootstrap intervals over patients.",
            "",
            "| measurement | scans | mean | MAE | bias | limits of agreement |",
            "|---|---:|---:|---|---|---|",
        ]
        for name, entry in measurements.items():
            agreement = entry.get("agreement")
            cells = ["", "", ""]
            if agreement:
                mae, bias = agreement["mae"], agreement["bias"]
                low, high = agreement["loa_low"], agreement["loa_high"]
                cells = [
                    f"{_num(mae['value'])} {_interval(mae['low'], mae['high'])}",
                    f"{_num(bias['value'])} {_interval(bias['low'], bias['high'])}",
                    f"{_num(low['value'])} to {_num(high['value'])}",
                ]
            lines.append(f"| {name} | {entry['n']} | {_num(entry['mean'])} | " + " | ".join(cells)
                         + " |")  # fmt: skip
        lines.append("")
    markers = report.get("markers")
    if markers:
        lines += [
            "## The measurement and the image model",
            "",
            f"The label predicted by {markers['measurement']} alone, by the image model's "
            "probability, and by both combined: logistic models fitted on the validation "
            f"split (markers.json), scored here on {markers['n']} labelled scans "
            f"({markers['n_positive']} positive; {markers['left_out']} left out with nothing "
            "to measure). AUC with DeLong's and a patient-bootstrap 95 % interval; paired "
            "DeLong tests.",
            "",
            "| predictor | AUC | DeLong 95 % CI | bootstrap 95 % CI |",
            "|---|---:|---|---|",
        ]
        for name, figures in markers["predictors"].items():
            lines.append(
                f"| {name} | {_num(figures['auc'])} | "
                f"{_interval(figures['delong_low'], figures['delong_high'], 3)} | "
                f"{_interval(figures['bootstrap_low'], figures['bootstrap_high'], 3)} |"
            )
        lines += ["", "| pair | AUC difference | bootstrap 95 % CI | p (DeLong) |",
                  "|---|---:|---|---:|"]  # fmt: skip
        for pair in markers["comparisons"]:
            p_value = pair["p_value"]
            lines.append(
                f"| {pair['a']} - {pair['b']} | {_num(pair['difference'])} | "
                f"{_interval(pair['bootstrap_low'], pair['bootstrap_high'], 3)} | "
                + ("n/a" if p_value is None else f"{p_value:.3g}")
                + " |"
            )
        lines += ["", "The decision curve (decision_curve.png) shows the net benefit of each "
                  "against the threshold probability.", ""]  # fmt: skip
    return lines


def format_tables(report: Mapping[str, Any]) -> str:
    """Plain-text tables for the terminal."""
    rows = [["figure", "value", "95 % CI"]]
    segmentation = report.get("segmentation", {})
    unit = segmentation.get("distance_unit", "px")
    names = (
        ("iou", "IoU"),
        ("dice", "Dice"),
        ("hd95", f"HD95 ({unit})"),
        ("assd", f"ASSD ({unit})"),
    )
    names += tuple((f"dice_{c}", f"Dice {c}") for c in segmentation.get("classes", ()))
    for key, name in names:
        if key in segmentation:
            f = segmentation[key]
            rows.append([name, f"{_num(f['value'])} ± {_num(f.get('std'))}", _ci(f)])
    classification = report.get("classification", {})
    for key in CLASSIFICATION_FIGURES:
        if key in classification:
            rows.append([key.replace("_", " "), _num(classification[key]["value"]),
                         _ci(classification[key])])  # fmt: skip
    if "best_auc" in classification:
        rows.append(["best possible AUC", _num(classification["best_auc"]), ""])
    for name, entry in (report.get("measurements") or {}).items():
        for key in ("mae", "bias") if entry.get("agreement") else ():
            figure = entry["agreement"][key]
            rows.append([f"{name} {key}", _num(figure["value"]),
                         _interval(figure["low"], figure["high"], 3)])  # fmt: skip
    for name, figures in ((report.get("markers") or {}).get("predictors") or {}).items():
        rows.append([f"AUC {name}", _num(figures["auc"]),
                     _interval(figures["delong_low"], figures["delong_high"], 3)])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if classification:
        cm = classification["confusion_matrix"]
        lines += [
            "",
            f"threshold {report['operating_point']['threshold']:.3f} (chosen on val by "
            f"{report['operating_point']['rule']})",
            "                 predicted preterm  predicted control",
            f"true preterm     {cm['tp']:>17}  {cm['fn']:>17}",
            f"true control     {cm['fp']:>17}  {cm['tn']:>17}",
        ]
    return "\n".join(lines)


def _figure(value: float, interval: tuple[float, float] | None, std: float | None = None):
    low, high = interval if interval is not None else (math.nan, math.nan)
    figure = {"value": _clean(value), "ci_low": _clean(low), "ci_high": _clean(high)}
    if std is not None:
        figure["std"] = _clean(std)
    return figure


def _clean(value: float | None) -> float | None:
    """JSON has no NaN: undefined figures are written as null."""
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(figure: Mapping[str, Any]) -> str:
    if figure.get("ci_low") is None or figure.get("ci_high") is None:
        return "n/a"
    return f"[{figure['ci_low']:.3f}, {figure['ci_high']:.3f}]"


def _manifest(config: Config, data, cache_root, echo) -> Manifest:
    if data is not None:
        config = config.replace({"data.path": str(data)})
    source = resolve_data(config, cache_root)
    return read_manifest(prepared_data(config, source, cache_root, echo=echo))


def _mean_choice(choices: Sequence[analysis.ThresholdChoice]) -> analysis.ThresholdChoice:
    """The operating point of an ensemble of folds: the mean of the folds' thresholds (as
    ``cervixnet predict`` uses it), with the mean of what each reached on its validation."""
    return analysis.ThresholdChoice(
        threshold=float(np.mean([c.threshold for c in choices])),
        rule=choices[0].rule,
        target=choices[0].target,
        sensitivity=float(np.mean([c.sensitivity for c in choices])),
        specificity=float(np.mean([c.specificity for c in choices])),
    )


def _external_indices(manifest: Manifest, splits: Splits) -> dict[str, list[int]]:
    known = {p for name in SPLIT_NAMES for p in splits.patients(name)}
    if any(r.patient_id in known for r in manifest.records):
        return splits.indices(manifest)
    return {"external": list(range(len(manifest.records)))}


def _float_column(manifest: Manifest, name: str, indices: Sequence[int]) -> np.ndarray | None:
    values = [manifest.records[i].extra.get(name) for i in indices]
    if not all(values):
        return None
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return None


def _reference_column(manifest: Manifest, name: str, indices: Sequence[int]) -> np.ndarray | None:
    """A manifest column of reference values (NaN where empty); None when no row has one."""
    values = [manifest.records[i].extra.get(name) or "" for i in indices]
    if not any(values):
        return None
    try:
        return np.array([float(v) if v else math.nan for v in values])
    except ValueError as error:
        raise DataError(f"{manifest.path}: column {name!r} must hold numbers: {error}") from None


def _without_nan(value: Any) -> Any:
    """``value`` with every NaN float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _free_folder(path: Path) -> Path:
    if not path.exists():
        return path
    for k in range(2, 1000):
        candidate = path.with_name(f"{path.name}-{k}")
        if not candidate.exists():
            return candidate
    raise ConfigError(f"{path}: too many earlier evaluations; pass --out")


def _write_outputs(
    out_dir: Path,
    report: dict[str, Any],
    predictions: Mapping[str, np.ndarray],
    per_image: Mapping[str, np.ndarray],
    manifest: Manifest,
    indices: Sequence[int],
    choice: analysis.ThresholdChoice | None,
    run_dir: Path,
    model: keras.Model,
    gradcam_images: int,
    seed: int,
    explain: Explainer | None,
    measured: Mapping[str, np.ndarray],
    references: Mapping[str, np.ndarray | None],
) -> list[Path]:
    from cervixnet import figures

    files: list[Path] = []

    def save(name: str, image: np.ndarray) -> None:
        path = inside_folder(out_dir, name)  # Grad-CAM names come from image file names
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise DataError(f"{path}: could not encode the image as PNG")
        encoded.tofile(str(path))
        files.append(path)

    def draw(name: str, figure) -> None:
        files.extend(figures.save_figure(figure, out_dir / name))

    has_mask = predictions["has_mask"]
    iou = per_image["iou"]
    probability = predictions.get("probability")
    threshold = choice.threshold if choice is not None else None
    unit = report.get("segmentation", {}).get("distance_unit", "px")
    scores = [
        f"{name}_{unit}" if name in ("hd95", "assd") else name for name in SEGMENTATION_FIGURES
    ]
    class_names = report.get("segmentation", {}).get("classes") or []
    class_dice = per_image.get("class_dice")
    with (out_dir / run_folder.PREDICTIONS).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "source_image", "patient_id", "label", "probability", "predicted_class",
             *scores, "uncertainty", *measured, *(f"dice_{c}" for c in class_names)]
        )  # fmt: skip
        for k, index in enumerate(indices):
            record = manifest.records[index]
            writer.writerow(
                [
                    str(record.image.relative_to(manifest.root)),
                    record.extra.get("source_image", ""),
                    record.patient_id,
                    "" if record.label is None else record.label,
                    "" if probability is None else f"{probability[k]:.6f}",
                    "" if probability is None else int(probability[k] >= threshold),
                    *(
                        f"{per_image[name][k]:.6f}"
                        if has_mask[k] and math.isfinite(per_image[name][k])
                        else ""
                        for name in SEGMENTATION_FIGURES
                    ),
                    f"{predictions['uncertainty'][k]:.6f}",
                    *(
                        f"{values[k]:.3f}" if math.isfinite(values[k]) else ""
                        for values in measured.values()
                    ),
                    *(
                        f"{class_dice[k, c]:.6f}" if has_mask[k] else ""
                        for c in range(len(class_names))
                    ),
                ]
            )
    files.append(out_dir / run_folder.PREDICTIONS)
    for name, reference in references.items():
        if reference is not None and np.isfinite(reference).any():
            quantity, unit = name.rsplit("_", 1)
            figure = figures.bland_altman_figure(
                measured[name], reference, quantity=quantity.replace("_", " "), unit=unit
            )
            draw(f"bland_altman_{name}", figure)
    if "decision_curve" in report:
        draw("decision_curve", figures.decision_curve_figure(report["decision_curve"]))

    classification = report.get("classification")
    if classification is not None:
        labels = predictions["label"]
        known = ~np.isnan(labels)
        y, p = labels[known], probability[known]
        patients = np.array([manifest.records[i].patient_id for i in indices])[known]
        if 0 < y.sum() < len(y):
            draw("roc", figures.roc_figure(y, p, threshold, groups=patients, seed=seed))
            draw("precision_recall", figures.precision_recall_figure(y, p, threshold))
        draw("confusion_matrix", figures.confusion_matrix_figure(y, p, threshold))
        draw("calibration", figures.calibration_figure(y, p))
    if (run_dir / run_folder.HISTORY).is_file():
        history = figures.read_history(run_dir / run_folder.HISTORY)
        draw("training_curves", figures.training_curves_figure(history))
    if has_mask.any():
        order = [k for k in np.argsort(iou) if has_mask[k]]
        picks = {"worst": order[:2], "median": order[len(order) // 2 - 1 : len(order) // 2 + 1],
                 "best": order[-2:]}  # fmt: skip
        rows = []
        images = predictions["images"]
        for caption, chosen in picks.items():
            for k in dict.fromkeys(chosen):
                rows.append(
                    (
                        f"{caption}: IoU {iou[k]:.3f}",
                        images[k],
                        predictions["mask_true"][k],
                        predictions["mask_prob"][k],
                    )
                )
        classes = report.get("segmentation", {}).get("classes")
        draw("segmentation_overlays", figures.overlay_figure(rows, class_names=classes))
    if gradcam_images > 0 and classification is not None and explain is not None:
        sample = np.linspace(0, len(indices) - 1, min(gradcam_images, len(indices))).round()
        sample = sorted({int(s) for s in sample})
        overlays = explain(model, predictions["images"][sample])
        folder = out_dir / "gradcam"
        folder.mkdir()
        for k, overlay in zip(sample, overlays, strict=True):
            stem = Path(str(manifest.records[indices[k]].image)).stem
            save(f"gradcam/{stem}.png", overlay)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out_dir / "report.md").write_text(
        format_report(report) + _figure_list(files, out_dir), encoding="utf-8"
    )
    return [out_dir / "report.json", out_dir / "report.md", *files]


def _figure_list(files: Sequence[Path], out_dir: Path) -> str:
    pictures = [f for f in files if f.suffix == ".png" and f.parent == out_dir]
    if not pictures:
        return ""
    lines = ["## Plots", ""]
    lines += [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in pictures]
    return "\n".join(lines) + "\n"
