"""Semi-supervised training against supervised training on the same few annotated patients.

For each of K patient-level folds (as `cervixnet train --folds` makes them) and each share of
annotated patients (`--fractions`, default 10 %, 25 % and 100 %), the fold's training and
validation patients are shuffled once (seeded by the fold) and the first share of each keeps
its masks and labels; the rest of them become unannotated scans (mask and label blanked in a
manifest the script writes under --work; the scans are only read). The fold's test patients
keep theirs. So the 10 % patients are among the 25 % ones, and the test patients are the same
at every share.

- `supervised`: `cervixnet train` on the annotated patients alone. It is the teacher of the
  semi-supervised run (`OUT/teacher`), the same run a supervised `cervixnet train` makes;
- `semi-supervised`: `cervixnet train --semi-supervised`: the teacher's pseudo-labels of the
  unannotated scans, then a student trained on both.

Every run has the same --steps; the student starts from its teacher, so `--control also`
(or `only`) adds supervised training for twice the steps, the compute of both together.
Each is scored on the fold's test patients at each scan's own
size (`benchmarks.real_data_recipe.score_run`): Dice, HD95 and, with the manifest's
`head_circumference_mm`, the head circumference error (`cervixnet.measure`). The figures per
fold, their mean and spread, and the paired difference semi-supervised - supervised with its
spread go to --out (JSON) and are printed.

    python -m benchmarks.semi_supervised --data DATA --folds 3 --steps 400 --out semi.json
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.real_data_recipe import FIGURES, paired_difference, score_run
from benchmarks.script import cervixnet_first, parser_from_docstring, patient_folds


def annotated_share(patients: tuple[str, ...], fraction: float, seed: int) -> set[str]:
    """The first ``fraction`` of ``patients`` (at least 2) in a seeded order: nested over
    fractions, as the order is the same for each."""
    order = np.random.default_rng(seed).permutation(len(patients))
    count = min(len(patients), max(2, round(fraction * len(patients))))
    return {patients[i] for i in order[:count]}


def write_manifest(source: Path, out_dir: Path, keep: set[str]) -> Path:
    """A copy of the manifest ``source`` in ``out_dir`` whose rows of patients outside
    ``keep`` have neither mask (of any column), Bézier outline nor label; paths made absolute,
    so no image is copied."""
    with source.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    for row in rows:
        for column in [c for c in columns if c == "image" or c.endswith("mask")]:
            if row.get(column):
                row[column] = str((source.parent / row[column]).resolve())
        if row["patient_id"] not in keep:  # no mask of any class, no outline, no label
            for column in columns:
                if column in ("label", "bezier") or column.endswith("mask"):
                    row[column] = ""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "manifest.csv"
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return target


def main() -> None:
    parser = parser_from_docstring(__doc__)
    parser.add_argument("--data", required=True, help="data folder with manifest.csv")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run these folds (1-based)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 1.0])
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps of every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="semi-supervised-runs", help="folder for the runs")
    parser.add_argument("--out", required=True, help="JSON file of the figures")
    parser.add_argument(
        "--control",
        choices=("off", "also", "only"),
        default="off",
        help="supervised training for twice the steps (the teacher's and the student's "
        "together) beside the two recipes, or alone",
    )
    args = parser.parse_args()
    cervixnet_first()
    import keras

    from cervixnet.data.manifest import read_manifest, resolve_manifest_path
    from cervixnet.data.splits import Splits
    from cervixnet.runs import train

    base, folds = patient_folds(args.data, args.folds, args.seed)
    base = base.replace({"training.steps": args.steps})
    source = resolve_manifest_path(args.data)
    work = Path(args.work).resolve()
    results: dict[str, list[dict]] = {}
    for k, fold in enumerate(folds, start=1):
        if args.only_folds and k not in args.only_folds:
            continue
        for fraction in args.fractions:
            keep = annotated_share(fold.train, fraction, args.seed + k) | annotated_share(
                fold.val, fraction, args.seed + 100 + k
            )
            folder = work / f"fold-{k}" / f"annotated-{fraction:g}"
            data = write_manifest(source, folder / "data", keep | set(fold.test))
            splits = Splits(
                train=tuple(p for p in fold.train if p in keep),
                val=tuple(p for p in fold.val if p in keep),
                test=fold.test,
                seed=args.seed,
            )
            semi = fraction < 1.0
            config = base.replace(
                {"data.path": str(data.parent), "training.semi_supervised.enabled": semi}
            )
            runs, metrics = {}, {}
            if args.control != "only":
                keras.backend.clear_session()
                started = time.perf_counter()
                run = train(config, folder / "run", splits=splits, verbose=0)
                minutes = (time.perf_counter() - started) / 60
                metrics = run.metrics
                runs["supervised"] = folder / "run" / "teacher" if semi else folder / "run"
                if semi:
                    runs["semi-supervised"] = folder / "run"
            if args.control != "off" and semi:
                keras.backend.clear_session()
                started = time.perf_counter()
                twice = config.replace(
                    {"training.semi_supervised.enabled": False, "training.steps": 2 * args.steps}
                )
                run = train(twice, folder / "run-twice-the-steps", splits=splits, verbose=0)
                minutes = (time.perf_counter() - started) / 60
                metrics = metrics or run.metrics
                runs["supervised-2x-steps"] = folder / "run-twice-the-steps"
            if not runs:
                continue
            manifest = read_manifest(Path(metrics["prepared_data"]) / "manifest.csv")
            test = splits.indices(manifest)["test"]
            for name, run_dir in runs.items():
                figures = score_run(run_dir, manifest, test)
                figures.update(
                    fold=k,
                    annotated_patients=len(splits.train) + len(splits.val),
                    unannotated_scans=len(splits.unannotated_indices(manifest)),
                    pseudo_labelled=metrics.get("semi_supervised", {}).get("pseudo_labelled", 0)
                    if name == "semi-supervised"
                    else 0,
                    minutes_all_stages=round(minutes, 2),
                )
                results.setdefault(f"{name} {fraction:g}", []).append(figures)
                print(f"fold {k}, {fraction:.0%} annotated, {name}: {json.dumps(figures)}")
            Path(args.out).write_text(json.dumps(summarise(results), indent=2), encoding="utf-8")
    summary = summarise(results)
    Path(args.out).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(format_summary(summary))


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per recipe and share: the folds, their mean and spread (ddof 1); per share, the paired
    difference semi-supervised - supervised fold by fold, with its mean and spread."""
    summary: dict = {"recipes": {}, "differences": {}}
    for name, folds in results.items():
        stats = {}
        for figure in FIGURES:
            values = np.array([f[figure] for f in folds if figure in f], float)
            if values.size:
                spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
                stats[figure] = {"mean": float(values.mean()), "std": spread}
        summary["recipes"][name] = {"folds": folds, "summary": stats}
        if name.startswith("semi-supervised "):
            share = name.split()[-1]
            if f"supervised {share}" in results:
                summary["differences"][share] = paired_difference(
                    folds, results[f"supervised {share}"]
                )
            if f"supervised-2x-steps {share}" in results:
                summary["differences"][f"{share} against twice the steps"] = paired_difference(
                    folds, results[f"supervised-2x-steps {share}"]
                )
    return summary


def format_summary(summary: dict) -> str:
    shown = ("dice", "hd95_mm", "hc_mae_mm")
    lines = ["recipe                    " + "".join(f"{f:>18}" for f in shown)]
    for name, recipe in summary["recipes"].items():
        cells = [
            f"{recipe['summary'][f]['mean']:>10.3f} ± {recipe['summary'][f]['std']:<5.3f}"
            for f in shown
        ]
        lines.append(f"{name:<26}" + "".join(cells))
    for share, difference in summary["differences"].items():
        cells = [f"{difference[f]['mean']:>+10.3f} ± {difference[f]['std']:<5.3f}" for f in shown]
        lines.append(f"{'difference ' + share:<26}" + "".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
