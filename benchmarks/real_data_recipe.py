"""The default recipe against a plain reference on real scans, in patient-level folds.

For each of K folds (scikit-learn's StratifiedGroupKFold by patient, as `cervixnet train
--folds`), the same split trains two recipes one after the other:

- `default`: `cervixnet train --data DATA` as a user runs it: the plan (input size with the
  aspect ratio kept, width, depth, batch, steps filling --budget-minutes), warm-up and cosine
  decay, test-time flip, largest-component post-processing where validation keeps it;
- `plain`: `configs/plain.yaml`, the recipe before the plan, the same builder: 96 x 96
  squashed, 8 base filters, depth 4, batch 16, 24 epochs, cosine decay without warm-up, no
  test-time augmentation, no post-processing.

Both are scored on the fold's test patients at each scan's own size: IoU, Dice, HD95 and ASSD
(in source pixels and, with the manifest's `pixel_spacing_mm`, in mm), the head circumference
error (`cervixnet.measure.ellipse_circumference` of the predicted mask at the manifest's
spacing, against its `head_circumference_mm`), the AUC of the label, and the minutes each
run took. The figures per fold, their mean and spread, and the difference default - plain with
its spread go to --out (JSON) and are printed as a table.

    python -m benchmarks.real_data_recipe --data DATA --folds 3 --out recipe.json

`--variant NAME KEY=VALUE ...` adds a recipe: the default with those config overrides (values
in YAML), e.g. `--variant flip data.augment.horizontal_flip=0.5 --recipes default flip`.
`--steps N` fixes the optimizer steps of the default and its variants (no timed probe), so
that recipes compare at the same length whatever else the machine is running.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.script import cervixnet_first, parser_from_docstring, patient_folds

FIGURES = ("iou", "dice", "hd95_px", "assd_px", "hd95_mm", "hc_mae_mm", "hc_bias_mm", "auc")


def score_run(run_dir: Path, manifest, indices) -> dict[str, float]:
    """Test figures of a finished run, at each scan's own size, with its own TTA and
    post-processing."""
    import keras
    from sklearn.metrics import roc_auc_score

    from cervixnet.config import load_config
    from cervixnet.ensemble import apply_postprocessing, load_postprocessing
    from cervixnet.evaluation import predict_configured, segmentation_scores, source_size_pairs
    from cervixnet.measure import ellipse_circumference

    config = load_config(run_dir / "config.yaml")
    model = keras.models.load_model(run_dir / "model.keras")
    predictions = predict_configured(model, config, manifest, indices)
    pairs = source_size_pairs(manifest, indices, predictions["mask_prob"], config.data.resize)
    postprocessing = load_postprocessing(run_dir)
    scores = segmentation_scores(pairs, postprocessing)
    spacing = np.array(  # square pixels (HD95 in px scales to mm), of the scan's own size
        [(manifest.records[i].native_spacing or (np.nan, np.nan))[0] for i in indices]
    )
    reference = np.array(
        [float(manifest.records[i].extra.get("head_circumference_mm") or "nan") for i in indices]
    )
    circumference = np.array(
        [
            ellipse_circumference(apply_postprocessing(prob > 0.5, postprocessing), mm).value
            for (_, prob), mm in zip(pairs, spacing, strict=True)
        ]
    )
    error = circumference - reference
    figures = {
        "iou": float(np.nanmean(scores["iou"])),
        "dice": float(np.nanmean(scores["dice"])),
        "hd95_px": float(np.nanmean(scores["hd95"])),
        "assd_px": float(np.nanmean(scores["assd"])),
        "hd95_mm": float(np.nanmean(scores["hd95"] * spacing)),
        "hc_mae_mm": float(np.nanmean(np.abs(error))),
        "hc_bias_mm": float(np.nanmean(error)),
        "hc_p95_mm": float(np.nanpercentile(np.abs(error), 95)),
        "images": len(indices),
    }
    labels, probability = predictions["label"], predictions.get("probability")
    known = ~np.isnan(labels)
    if probability is not None and 0 < labels[known].sum() < known.sum():
        figures["auc"] = float(roc_auc_score(labels[known], probability[known]))
    return figures


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument("--data", required=True, help="data folder with manifest.csv")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run these folds (1-based)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="the default's budget")
    parser.add_argument("--recipes", nargs="*", default=["default", "plain"])
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME KEY=VALUE",
        help="another recipe: the default with these config overrides",
    )
    parser.add_argument("--steps", type=int, default=None, help="fix the default's steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="recipe-runs", help="folder for the run folders")
    parser.add_argument("--out", required=True, help="JSON file of the figures")
    args = parser.parse_args()
    cervixnet_first()
    import keras

    from cervixnet.config import load_config
    from cervixnet.data.manifest import read_manifest
    from cervixnet.runs import train

    base, folds = patient_folds(args.data, args.folds, args.seed)
    plain = load_config("plain", overrides={"data.path": args.data, "seed": args.seed})
    if args.budget_minutes is not None:
        base = base.replace({"training.budget_minutes": args.budget_minutes})
    if args.steps is not None:
        base = base.replace({"training.steps": args.steps})
    recipes = {"default": base, "plain": plain}
    for name, *settings in args.variant:
        overrides = {}
        for setting in settings:
            key, _, value = setting.partition("=")
            overrides[key] = yaml.safe_load(value)
        recipes[name] = base.replace(overrides)
    results: dict[str, list[dict]] = {name: [] for name in args.recipes}
    work = Path(args.work)
    for k, splits in enumerate(folds, start=1):
        if args.only_folds and k not in args.only_folds:
            continue
        for name in args.recipes:
            config = recipes[name]
            keras.backend.clear_session()
            started = time.perf_counter()
            run = train(config, work / f"fold-{k}" / name, splits=splits, verbose=0)
            minutes = (time.perf_counter() - started) / 60
            manifest = read_manifest(Path(run.metrics["prepared_data"]) / "manifest.csv")
            figures = score_run(run.run_dir, manifest, splits.indices(manifest)["test"])
            figures.update(fold=k, minutes=round(minutes, 2), epochs=run.metrics["epochs"])
            results[name].append(figures)
            print(f"fold {k} {name}: " + json.dumps(figures), flush=True)
            Path(args.out).write_text(json.dumps(summarise(results), indent=2), encoding="utf-8")
    summary = summarise(results)
    Path(args.out).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(format_summary(summary))


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per recipe: the folds, their mean and standard deviation (ddof 1); and the paired
    difference per fold, with its mean and spread, of default - plain and of each variant -
    default."""
    summary: dict = {"recipes": {}}
    for name, folds in results.items():
        stats = {}
        for figure in (*FIGURES, "minutes"):
            values = np.array([f[figure] for f in folds if figure in f], float)
            if values.size:
                spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
                stats[figure] = {"mean": float(values.mean()), "std": spread}
        summary["recipes"][name] = {"folds": folds, "summary": stats}
    comparisons = [("default", "plain")]
    comparisons += [(name, "default") for name in results if name not in ("default", "plain")]
    for first, second in comparisons:
        if {first, second} <= results.keys():
            summary[f"difference_{first}_minus_{second}"] = paired_difference(
                results[first], results[second]
            )
    return summary


def paired_difference(first: list[dict], second: list[dict]) -> dict:
    """Per figure, ``first - second`` fold by fold, with its mean and spread (ddof 1)."""
    paired = {}
    for figure in FIGURES:
        pairs = [
            (a[figure], b[figure])
            for a, b in zip(first, second, strict=False)
            if figure in a and figure in b
        ]
        if pairs:
            difference = np.array([a - b for a, b in pairs])
            spread = float(difference.std(ddof=1)) if difference.size > 1 else 0.0
            paired[figure] = {
                "per_fold": difference.tolist(),
                "mean": float(difference.mean()),
                "std": spread,
            }
    return paired


def format_summary(summary: dict) -> str:
    names = list(summary["recipes"])
    lines = ["figure     " + "".join(f"{n:>22}" for n in names)]
    for figure in (*FIGURES, "minutes"):
        cells = []
        for name in names:
            stat = summary["recipes"][name]["summary"].get(figure)
            cells.append(f"{stat['mean']:>13.3f} ± {stat['std']:<6.3f}" if stat else f"{'':>22}")
        lines.append(f"{figure:<11}" + "".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
