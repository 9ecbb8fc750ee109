"""Millimetres on real scans: a measurement from the predicted mask against the sonographers',
and that measurement against the image model as a predictor of the label, in patient-level folds.

For each of K folds (scikit-learn's StratifiedGroupKFold by patient, as `cervixnet train
--folds`), the default recipe trains on the fold (a finished run folder already in --work is
scored as it is), then its predictions on the fold's validation and test patients are
measured at each scan's own size and spacing:

- segmentation: Dice, HD95 and ASSD in mm;
- the measurement (`--measurement`, default the head circumference, HC18's), from the
  predicted mask after the run's post-processing, against the manifest's column of the same
  name: mean absolute error, bias, 95 % limits of agreement, 95th percentile of the error;
- the label, predicted three ways: the measurement alone (its direction chosen on
  validation), the image model's probability, and both combined (a logistic model fitted on
  the fold's validation patients, `cervixnet.clinical.fit_combined`): AUC with its DeLong
  interval, and the paired DeLong test of each pair.

Test scans are scored by their own fold's models; "pooled" repeats the figures over the test
scans of every fold together (patients bootstrapped for the agreement intervals).

    python -m benchmarks.millimetres --data DATA --folds 3 --out millimetres.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.script import cervixnet_first, parser_from_docstring, patient_folds

PREDICTORS = ("measurement", "image", "combined")


def score_split(run_dir: Path, manifest, indices, measurement: str) -> dict[str, np.ndarray]:
    """Per image of ``indices``: label, patient, probability, Dice, HD95 and ASSD (mm), the
    measurement from the predicted mask and its reference."""
    import keras

    from cervixnet.config import load_config
    from cervixnet.ensemble import load_postprocessing
    from cervixnet.evaluation import (
        measure_pairs,
        pair_spacings,
        predict_configured,
        segmentation_scores,
        source_size_pairs,
    )

    config = load_config(run_dir / "config.yaml")
    model = keras.models.load_model(run_dir / "model.keras")
    predictions = predict_configured(model, config, manifest, indices)
    pairs = source_size_pairs(manifest, indices, predictions["mask_prob"], config.data.resize)
    spacings = pair_spacings(manifest, indices)
    postprocessing = load_postprocessing(run_dir)
    scores = segmentation_scores(pairs, postprocessing, spacings=spacings)
    measured = measure_pairs(pairs, spacings, postprocessing, names=[measurement])[measurement]
    reference = [manifest.records[i].extra.get(measurement) or "nan" for i in indices]
    return {
        "label": predictions["label"],
        "patient": np.array([manifest.records[i].patient_id for i in indices]),
        "probability": predictions["probability"],
        "dice": scores["dice"],
        "hd95_mm": scores["hd95"],
        "assd_mm": scores["assd"],
        "measured": measured,
        "reference": np.array(reference, float),
    }


def fold_figures(val: dict, test: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """The fold's figures on ``test``, with the marker's direction and the combined model
    fitted on ``val``; and the three predictors' scores on ``test``."""
    from cervixnet import clinical

    known = ~np.isnan(val["label"])
    _, sign = clinical.oriented(val["label"][known], val["measured"][known])
    combined = clinical.fit_combined(
        val["label"], {"measurement": val["measured"], "probability": val["probability"]}
    )
    scores = {
        "measurement": sign * test["measured"],
        "image": test["probability"],
        "combined": combined.predict_proba(
            {"measurement": test["measured"], "probability": test["probability"]}
        ),
    }
    figures = {
        "images": len(test["label"]),
        "dice": float(np.nanmean(test["dice"])),
        "hd95_mm": float(np.nanmean(test["hd95_mm"])),
        "assd_mm": float(np.nanmean(test["assd_mm"])),
        "agreement": clinical.agreement(test["measured"], test["reference"]),
        "marker_sign": sign,
        "combined_model": json.loads(combined.to_json()),
    }
    return figures, scores


def label_figures(labels, scores: dict[str, np.ndarray], patients, seed: int) -> dict:
    from cervixnet import clinical

    known = ~np.isnan(labels) & np.all([np.isfinite(s) for s in scores.values()], axis=0)
    figures = clinical.compare_predictors(
        labels[known], {name: s[known] for name, s in scores.items()}, patients[known], seed=seed
    )
    figures["left_out"] = int((~np.isnan(labels)).sum() - known.sum())  # nothing measured
    return figures


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument("--data", required=True, help="data folder with manifest.csv")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--measurement", default="head_circumference_mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="millimetre-runs", help="folder for the run folders")
    parser.add_argument("--out", required=True, help="JSON file of the figures")
    args = parser.parse_args()
    cervixnet_first()
    import keras

    from cervixnet import clinical
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.splits import Splits
    from cervixnet.runs import train

    config, folds = patient_folds(args.data, args.folds, args.seed)
    result: dict = {"measurement": args.measurement, "folds": []}
    pooled: dict[str, list] = {}
    for k, splits in enumerate(folds, start=1):
        run_dir = Path(args.work) / f"fold-{k}" / "default"
        if not (run_dir / "metrics.json").is_file():
            keras.backend.clear_session()
            train(config, run_dir, splits=splits, verbose=0)
        kept = Splits.load(run_dir / "splits.json")
        if any(set(kept.patients(s)) != set(splits.patients(s)) for s in ("val", "test")):
            raise SystemExit(f"{run_dir}: trained on other folds; remove it or change --work")
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        manifest = read_manifest(Path(metrics["prepared_data"]) / "manifest.csv")
        indices = splits.indices(manifest)
        val = score_split(run_dir, manifest, indices["val"], args.measurement)
        test = score_split(run_dir, manifest, indices["test"], args.measurement)
        figures, scores = fold_figures(val, test)
        figures["fold"] = k
        figures["label"] = label_figures(test["label"], scores, test["patient"], args.seed)
        result["folds"].append(figures)
        for key, values in {**test, **{f"score_{n}": s for n, s in scores.items()}}.items():
            pooled.setdefault(key, []).append(values)
        print(f"fold {k}: " + json.dumps(_brief(figures)), flush=True)
    joined = {key: np.concatenate(values) for key, values in pooled.items()}
    patients = joined["patient"]
    result["pooled"] = {
        "images": len(patients),
        "dice": float(np.nanmean(joined["dice"])),
        "hd95_mm": float(np.nanmean(joined["hd95_mm"])),
        "assd_mm": float(np.nanmean(joined["assd_mm"])),
        "agreement": clinical.agreement_with_intervals(
            joined["measured"], joined["reference"], patients, seed=args.seed
        ),
        "label": label_figures(
            joined["label"], {n: joined[f"score_{n}"] for n in PREDICTORS}, patients, args.seed
        ),
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(format_summary(result))


def _brief(figures: dict) -> dict:
    agreement = figures["agreement"]
    aucs = {n: round(p["auc"], 3) for n, p in figures["label"]["predictors"].items()}
    return {
        "dice": round(figures["dice"], 4),
        "hd95_mm": round(figures["hd95_mm"], 2),
        "mae": round(agreement["mae"], 2),
        "bias": round(agreement["bias"], 2),
        "auc": aucs,
    }


def format_summary(result: dict) -> str:
    """One line per fold and the pooled line: Dice, HD95, measurement agreement, AUCs."""
    head = "fold    Dice    HD95 mm  MAE mm  bias mm  LoA mm            " + "  ".join(
        f"AUC {n:<11}" for n in PREDICTORS
    )
    lines = [head]
    rows = [(str(f["fold"]), f, f["agreement"]) for f in result["folds"]]
    pooled = result["pooled"]
    rows.append(("pooled", pooled, {k: v["value"] for k, v in pooled["agreement"].items()}))
    for name, figures, agreement in rows:
        aucs = figures["label"]["predictors"]
        lines.append(
            f"{name:<7} {figures['dice']:.4f}  {figures['hd95_mm']:7.2f}  {agreement['mae']:6.2f}"
            f"  {agreement['bias']:7.2f}  {agreement['loa_low']:6.2f} to "
            f"{agreement['loa_high']:5.2f}"
            + "".join(f"  {aucs[n]['auc']:.3f}" + " " * 11 for n in PREDICTORS)
        )
    for pair in pooled["label"]["comparisons"]:
        lines.append(
            f"pooled DeLong {pair['a']} - {pair['b']}: {pair['difference']:+.3f} "
            f"(p = {pair['p_value']:.3g})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
