"""``cervixnet compare``: several architectures on one data set, split, loss and budget.

Reproduces the paper's Table 1 (mean IoU ± std over images for train, val and test, per
network), with each network's parameter count and training time. ``out_dir`` receives one
run folder per architecture, ``splits.json`` (the one split all of them used), and
``table1.md`` / ``table1.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from cervixnet import run_folder
from cervixnet.config import ARCHITECTURES, Config
from cervixnet.data.manifest import read_manifest
from cervixnet.data.sources import prepared_data, resolve_data
from cervixnet.data.splits import SPLIT_NAMES, Splits, split_patients
from cervixnet.errors import ConfigError, check_output_folder
from cervixnet.runs.scoring import TrainResult
from cervixnet.runs.train import train
from cervixnet.training.fit import build_model
from cervixnet.training.plan import plan_run

DEFAULT_ARCHITECTURES = ("unet", "fcn", "deeplabv3")


@dataclasses.dataclass(frozen=True)
class ComparisonResult:
    """The runs, the table and where it was written."""

    out_dir: Path
    runs: dict[str, TrainResult]
    table: dict[str, Any]
    seconds: float


def compare_architectures(
    config: Config,
    out_dir: str | Path,
    archs: Sequence[str] = DEFAULT_ARCHITECTURES,
    *,
    cache_root: str | Path | None = None,
    verbose: int | str = "auto",
    echo: Callable[[str], None] = print,
) -> ComparisonResult:
    """Trains each of ``archs`` with ``config`` (only ``arch`` changes) on one shared split.

    Raises:
        ConfigError: an unknown or repeated architecture, or a non-empty ``out_dir``.
    """
    started = time.perf_counter()
    archs = tuple(archs)
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown or not archs or len(set(archs)) != len(archs):
        raise ConfigError(
            f"--archs must name distinct architectures among {', '.join(ARCHITECTURES)}. "
            f"Received: {','.join(archs)}"
        )
    out_dir = check_output_folder(out_dir)
    source = resolve_data(config, cache_root)
    # One plan for every network (input size, width, batch, steps); each plans its own depth.
    config, plan = plan_run(
        config.replace({"arch": archs[0]}), source, size_multiple=32 if "fcn" in archs else None
    )
    if plan is not None:
        echo(plan.format())
        config = config.replace({k: v for k, v in plan.values.items() if ".depth" not in k})
    manifest = read_manifest(prepared_data(config, source, cache_root, echo=echo))
    if config.data.splits_file is not None:
        splits = Splits.load(config.data.splits_file)
    else:
        splits = split_patients(manifest, config.data.split, seed=config.seed)
    for arch in archs:  # every network's options are checked before anything is written
        build_model(plan_run(config.replace({"arch": arch}), source)[0])  # its depth planned
        keras.backend.clear_session()
    out_dir.mkdir(parents=True, exist_ok=True)
    splits.save(out_dir / run_folder.SPLITS, manifest)
    runs: dict[str, TrainResult] = {}
    for k, arch in enumerate(archs, start=1):
        echo(f"[{k}/{len(archs)}] {arch}")
        keras.backend.clear_session()
        runs[arch] = train(
            config.replace({"arch": arch}),
            out_dir / arch,
            cache_root=cache_root,
            verbose=verbose,
            echo=echo,
            splits=splits,
        )
    table = comparison_table({arch: run.metrics for arch, run in runs.items()})
    table.update({"epochs": config.training.epochs, "image_size": list(config.data.image_size)})
    (out_dir / "table1.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    (out_dir / "table1.md").write_text(format_comparison(table), encoding="utf-8")
    return ComparisonResult(out_dir, runs, table, time.perf_counter() - started)


def comparison_table(run_metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"networks": {arch: {"parameters", "seconds", split: {"iou_mean", "iou_std",
    "dice_mean", "dice_std", "n_images"}}}}`` from each run's ``metrics.json``."""
    networks = {}
    for arch, metrics in run_metrics.items():
        row: dict[str, Any] = {
            "parameters": metrics.get("parameters"),
            "seconds": metrics.get("seconds"),
        }
        for split in SPLIT_NAMES:
            segmentation = metrics.get("splits", {}).get(split, {}).get("segmentation")
            if segmentation:
                row[split] = {
                    key: segmentation[key]
                    for key in ("iou_mean", "iou_std", "dice_mean", "dice_std", "n_images")
                }
        networks[arch] = row
    return {"networks": networks}


def format_comparison(table: dict[str, Any]) -> str:
    """Table 1 as Markdown: IoU (mean ± std) per split and network, parameters, time."""
    lines = [
        "# Segmentation: mean IoU ± std over images",
        "",
        f"Every network trained {table.get('epochs', '?')} epochs at "
        f"{'x'.join(str(s) for s in table.get('image_size', []))} on the same split, loss and "
        "optimiser settings.",
        "",
        "| network | parameters | training time | train IoU | val IoU | test IoU |",
        "|---|---:|---:|---|---|---|",
    ]
    for arch, row in table["networks"].items():
        cells = []
        for split in SPLIT_NAMES:
            figures = row.get(split)
            cells.append(
                f"{figures['iou_mean']:.3f} ± {figures['iou_std']:.3f}" if figures else "n/a"
            )
        seconds = row.get("seconds")
        minutes = f"{seconds / 60:.1f} min" if seconds is not None else "n/a"
        lines.append(f"| {arch} | {row['parameters']:,} | {minutes} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
