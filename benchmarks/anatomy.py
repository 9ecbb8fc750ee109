"""The two lips and the canal on the synthetic set: a two-lip joint U-Net, its per-class Dice
and the canal length of its masks against the generator's true length.

Trains the default recipe (`cervixnet train`: the joint U-Net, the planned input size, width
and batch) on the built-in synthetic data set with `data.classes: [anterior_lip,
posterior_lip]` and `data.mask_column: lips_mask`, for `--steps` optimizer steps (a finished
run folder in --work is scored as it is). On the test split, at each scan's own size and
spacing:

- per class (anterior lip, id 1; posterior lip, id 2) Dice and IoU, mean and standard
  deviation over images, and the Dice of the two lips' union (the whole cervix);
- the canal length (`cervixnet.measure.canal_length`) of the predicted mask, after the run's
  post-processing, against the manifest's `canal_length_mm`: mean absolute error, bias,
  95th percentile and largest absolute error, in mm;
- the same canal length measured on the reference lips (`lips/`): the floor the measurement
  itself sets.

    python -m benchmarks.anatomy --steps 960 --out anatomy.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.script import cervixnet_first, parser_from_docstring

CLASSES = ["anterior_lip", "posterior_lip"]
MEASUREMENT = "canal_length_mm"


def errors_summary(measured: np.ndarray, reference: np.ndarray) -> dict:
    """MAE, bias (measured - reference), 95th percentile and largest absolute error, in mm,
    over the images where both are finite; ``missing`` counts the others."""
    known = np.isfinite(measured) & np.isfinite(reference)
    error = measured[known] - reference[known]
    return {
        "images": int(known.sum()),
        "missing": int((~known).sum()),
        "mae_mm": float(np.mean(np.abs(error))),
        "bias_mm": float(np.mean(error)),
        "p95_abs_mm": float(np.percentile(np.abs(error), 95)),
        "max_abs_mm": float(np.max(np.abs(error))),
    }


def score_test(run_dir: Path) -> dict:
    """The run's kept model on its test split: per-class and union segmentation figures, and
    the canal length of the predicted and of the reference lips against ``canal_length_mm``."""
    import keras

    from cervixnet.config import load_config
    from cervixnet.data.manifest import read_manifest
    from cervixnet.data.splits import Splits
    from cervixnet.ensemble import load_postprocessing
    from cervixnet.evaluation import (
        measure_pairs,
        pair_spacings,
        predict_configured,
        source_size_pairs,
    )
    from cervixnet.measure import canal_length

    config = load_config(run_dir / "config.yaml")
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    manifest = read_manifest(Path(metrics["prepared_data"]) / "manifest.csv")
    indices = Splits.load(run_dir / "splits.json").indices(manifest)["test"]
    model = keras.models.load_model(run_dir / "model.keras")
    predictions = predict_configured(model, config, manifest, indices)
    pairs = source_size_pairs(manifest, indices, predictions["mask_prob"], config.data.resize)
    spacings = pair_spacings(manifest, indices)
    postprocessing = load_postprocessing(run_dir)
    measured = measure_pairs(pairs, spacings, postprocessing, names=[MEASUREMENT])[MEASUREMENT]
    floor = np.array(
        [
            canal_length(truth, spacing).value
            for (truth, _), spacing in zip(pairs, spacings, strict=True)
        ]
    )
    reference = np.array(
        [float(manifest.records[i].extra.get(MEASUREMENT) or "nan") for i in indices]
    )
    segmentation = metrics["splits"]["test"]["segmentation"]
    return {
        "images": len(indices),
        "segmentation": {
            "scored_at": segmentation["scored_at"],
            "classes": segmentation["classes"],
            "union_dice_mean": segmentation["dice_mean"],
            "union_dice_std": segmentation["dice_std"],
        },
        "canal_length_predicted": errors_summary(measured, reference),
        "canal_length_reference_lips": errors_summary(floor, reference),
    }


def format_summary(result: dict) -> str:
    """The per-class table and the two canal-length lines."""
    segmentation = result["test"]["segmentation"]
    lines = ["class            Dice             IoU"]
    for name, figures in segmentation["classes"].items():
        lines.append(
            f"{name:<16} {figures['dice_mean']:.3f} +- {figures['dice_std']:.3f}  "
            f"{figures['iou_mean']:.3f} +- {figures['iou_std']:.3f}"
        )
    lines.append(
        f"{'union':<16} {segmentation['union_dice_mean']:.3f} +- "
        f"{segmentation['union_dice_std']:.3f}"
    )
    for key in ("canal_length_predicted", "canal_length_reference_lips"):
        e = result["test"][key]
        lines.append(
            f"{key}: MAE {e['mae_mm']:.2f} mm, bias {e['bias_mm']:+.2f}, p95 {e['p95_abs_mm']:.2f},"
            f" max {e['max_abs_mm']:.2f} ({e['images']} images, {e['missing']} not measured)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument("--steps", type=int, default=960, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="anatomy-runs", help="folder for the run folder")
    parser.add_argument("--cache-dir", default=None, help="synthetic and prepared data cache")
    parser.add_argument("--out", required=True, help="JSON file of the figures")
    args = parser.parse_args()
    cervixnet_first()

    from cervixnet.config import load_config
    from cervixnet.data.synthetic import GENERATOR_VERSION
    from cervixnet.runs import train

    config = load_config(
        overrides={
            "data.classes": CLASSES,
            "data.mask_column": "lips_mask",
            "training.steps": args.steps,
            "seed": args.seed,
        }
    )
    run_dir = Path(args.work) / f"lips-{args.steps}-steps-seed{args.seed}"
    if not (run_dir / "metrics.json").is_file():
        train(config, run_dir, cache_root=args.cache_dir, verbose=0)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    planned = load_config(run_dir / "config.yaml")
    result = {
        "data": "built-in synthetic set (SyntheticSpec(), 354 images)",
        "generator_version": GENERATOR_VERSION,
        "arch": planned.arch,
        "classes": CLASSES,
        "steps": args.steps,
        "seed": args.seed,
        "image_size": list(planned.data.image_size),
        "base_filters": planned.model.base_filters,
        "batch_size": planned.training.batch_size,
        "run_seconds": metrics["seconds"],  # training and scoring
        "test": score_test(run_dir),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_summary(result))


if __name__ == "__main__":
    main()
