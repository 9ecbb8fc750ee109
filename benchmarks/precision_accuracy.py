"""Does training in a 16-bit precision cost accuracy? Paired runs of ``cervixnet train``.

Trains the same configuration (default: the built-in synthetic default run) once per seed and
precision, each in its own ``cervixnet train`` process, and compares every precision with
``float32`` seed by seed. Two runs with the same seed share the split, the initial weights,
the data order and the augmentation; only the arithmetic differs. Reported per run:

- ``test_iou``: the test IoU of the saved model (the epoch ``training.monitor`` picked);
- ``val_iou_last``: the validation IoU averaged over the last ``--last`` epochs of
  ``history.csv``, which does not depend on which single epoch the monitor picked;
- ``test_auc`` and the run's wall time.

Then, per precision, the mean over seeds of each figure's difference from float32. A
difference whose magnitude is below ``--tolerance`` (default 0.01, the goal of the speed
issue) on both IoU figures counts as "within tolerance".

    python -m benchmarks.precision_accuracy --seeds 0 1 2 --out precision_accuracy.json
    python -m benchmarks.precision_accuracy --precisions float32 mixed_bfloat16 \\
        --epochs 2 --seeds 0   # a quick look

The run folders, what each ``cervixnet train`` printed (``NAME.txt``) and its figures
(``NAME.json``) are kept under ``--work`` (default: a temporary folder, removed at the end
unless ``--keep``); a run whose figures are already there is not trained again, so an
interrupted comparison continues with the same ``--work``.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.script import parser_from_docstring
from cervixnet.config import PRECISIONS as _CONFIG_PRECISIONS

PRECISIONS = tuple(p for p in _CONFIG_PRECISIONS if p != "auto")


def run_one(
    work: Path, config: str | None, precision: str, seed: int, epochs: int | None, cache: Path
) -> dict:
    """One ``cervixnet train`` run in its own process; returns its figures."""
    from cervixnet.config import load_config, save_config

    run_dir = work / f"{precision}-seed{seed}"
    record = work / f"{run_dir.name}.json"
    if record.exists():  # finished by an earlier invocation with the same --work
        return json.loads(record.read_text(encoding="utf-8"))
    config_file = work / f"{precision}.yaml"
    save_config(load_config(config, {"training.precision": precision}), config_file)
    command = [sys.executable, "-m", "cervixnet.cli.main", "train", "--out", str(run_dir)]
    command += ["--config", str(config_file), "--seed", str(seed), "--cache-dir", str(cache)]
    command += ["--epochs", str(epochs)] if epochs else []
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (work / f"{run_dir.name}.txt").write_text(result.stdout, encoding="utf-8")
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"{precision} seed {seed}: cervixnet train failed: {tail}")
    run = {"precision": precision, "seed": seed, "seconds": round(seconds, 1)} | figures(run_dir)
    record.write_text(json.dumps(run), encoding="utf-8")
    return run


def figures(run_dir: Path) -> dict:
    """``test_iou``, ``test_auc``, ``best_epoch`` and the per-epoch validation IoU of a run."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    test = metrics["splits"]["test"]
    with (run_dir / "history.csv").open(newline="", encoding="utf-8") as handle:
        val_iou = [float(row["val_mask_iou"]) for row in csv.DictReader(handle)]
    return {
        "test_iou": test["segmentation"]["iou_mean"],
        "test_auc": test["classification"]["auc"],
        "best_epoch": metrics["best_epoch"],
        "val_iou": val_iou,
        "resolved_precision": metrics["reproducibility"]["precision"],
    }


def compare(runs: list[dict], tolerance: float) -> list[dict]:
    """Per precision other than float32: the mean paired difference of each figure."""
    by_key = {(run["precision"], run["seed"]): run for run in runs}
    rows = []
    for precision in sorted({run["precision"] for run in runs} - {"float32"}):
        pairs = [
            (by_key[("float32", seed)], by_key[(precision, seed)])
            for (name, seed) in by_key
            if name == precision and ("float32", seed) in by_key
        ]
        if not pairs:
            continue
        row: dict = {"precision": precision, "seeds": [b["seed"] for _, b in pairs]}
        for figure in ("test_iou", "val_iou_last", "test_auc"):
            differences = [b[figure] - a[figure] for a, b in pairs]
            row[f"{figure}_difference"] = statistics.fmean(differences)
            row[f"{figure}_differences"] = differences
        row["within_tolerance"] = all(
            abs(row[f"{figure}_difference"]) < tolerance for figure in ("test_iou", "val_iou_last")
        )
        row["speed_ratio"] = statistics.fmean(a["seconds"] for a, _ in pairs) / statistics.fmean(
            b["seconds"] for _, b in pairs
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument(
        "--config", default="plain", help="YAML config or shipped name (fixed sizes)"
    )
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS,
                        default=["float32", "mixed_bfloat16"])  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--last", type=int, default=5, help="epochs averaged for val_iou_last")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--work", default=None, help="where the run folders go")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if "float32" not in args.precisions:
        parser.error("--precisions must include float32, the reference")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="precision-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    runs = []
    try:
        for seed in args.seeds:
            for precision in args.precisions:
                run = run_one(work, args.config, precision, seed, args.epochs, cache)
                run["val_iou_last"] = statistics.fmean(run["val_iou"][-args.last :])
                runs.append(run)
                print(
                    f"{precision:>15} seed {seed}: test IoU {run['test_iou']:.4f}, "
                    f"val IoU (last {args.last}) {run['val_iou_last']:.4f}, "
                    f"test AUC {run['test_auc']:.3f}, best epoch {run['best_epoch']}, "
                    f"{run['seconds']:.0f} s",
                    flush=True,
                )
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    rows = compare(runs, args.tolerance)
    print(f"\nmean difference from float32 over seeds {args.seeds} (tolerance {args.tolerance}):")
    print(f"{'precision':>15} | {'test IoU':>9} | {'val IoU last':>12} | {'test AUC':>9} | "
          f"{'speed':>6} | within")  # fmt: skip
    for row in rows:
        print(
            f"{row['precision']:>15} | {row['test_iou_difference']:+9.4f} | "
            f"{row['val_iou_last_difference']:+12.4f} | {row['test_auc_difference']:+9.3f} | "
            f"{row['speed_ratio']:5.2f}x | {'yes' if row['within_tolerance'] else 'no'}"
        )
    if args.out:
        report = {
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "config": args.config,
            "epochs": args.epochs,
            "last": args.last,
            "tolerance": args.tolerance,
            "runs": runs,
            "comparison": rows,
        }
        Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
