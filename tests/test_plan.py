"""The data set's fingerprint and the plan made from it (``cervixnet plan``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.config import load_config
from cervixnet.data.fingerprint import DataFingerprint, fingerprint
from cervixnet.data.manifest import read_manifest
from cervixnet.data.splits import Splits
from cervixnet.errors import ConfigError
from cervixnet.training.build import learning_rate, run_epochs
from cervixnet.training.fit import training_inputs
from cervixnet.training.plan import (
    CPU_RULES,
    DeviceInfo,
    auto_keys,
    make_plan,
    measure_step_seconds,
    plan_run,
)
from tests.conftest import TINY_RUN_CONFIG, rewrite_manifest, write_tiny_dataset

CPU = DeviceInfo("cpu", "test CPU", 24 * 2**30)
GPU = DeviceInfo("gpu", "test GPU", 80 * 2**30)


def scans(height: int, width: int, images: int = 100) -> DataFingerprint:
    """A fingerprint of ``images`` scans of one size, in as many patients."""
    return DataFingerprint(
        source="manifest.csv",
        images=images,
        patients=images,
        read=images,
        median_size=(height, width),
        smallest_size=(height, width),
        largest_size=(height, width),
        aspect_ratio=width / height,
        aspect_range=(width / height, width / height),
        channels=1,
        spacing_mm=0.2,
        masked_images=images,
        foreground_fraction=0.3,
        foreground_range=(0.1, 0.5),
        labels={"preterm": images // 5, "control": images - images // 5, "unknown": 0},
    )


def constant_step(seconds: float):
    calls = []

    def step_seconds(config):
        calls.append(config)
        return seconds

    step_seconds.calls = calls
    return step_seconds


def test_fingerprint_reads_sizes_masks_labels_and_spacing(tiny_dataset: Path) -> None:
    def add_spacing(fields, rows):
        for k, row in enumerate(rows):
            row["pixel_spacing_mm"] = "0.1" if k % 2 else "0.3"
        return [*fields, "pixel_spacing_mm"], rows

    rewrite_manifest(tiny_dataset / "manifest.csv", add_spacing)
    found = fingerprint(tiny_dataset)
    # conftest writes 48 x 64 and 56 x 64 images, alternately, with a 14 x 8 ellipse mask.
    assert (found.images, found.patients, found.read) == (20, 10, 20)
    assert found.median_size == (52, 64)
    assert found.smallest_size == (48, 64) and found.largest_size == (56, 64)
    assert found.aspect_range == (round(64 / 56, 4), round(64 / 48, 4))
    assert found.spacing_mm == pytest.approx(0.2)
    assert found.labels == {"preterm": 10, "control": 10, "unknown": 0}
    assert found.masked_images == 20
    ellipse = math.pi * 14 * 8
    assert found.foreground_range[0] == pytest.approx(ellipse / (56 * 64), rel=0.15)
    assert found.foreground_range[1] == pytest.approx(ellipse / (48 * 64), rel=0.15)


def test_fingerprint_reads_at_most_max_images(tiny_dataset: Path) -> None:
    assert fingerprint(tiny_dataset, max_images=5).read == 5
    with pytest.raises(ValueError, match="Received: 0"):
        fingerprint(tiny_dataset, max_images=0)


@pytest.mark.parametrize(
    ("size", "device", "arch", "expected"),
    [
        ((173, 256), CPU, "unet-joint", (128, 192)),  # HC18: aspect 1.48 kept
        ((336, 544), CPU, "unet-joint", (112, 192)),  # a transvaginal export
        ((336, 544), GPU, "unet-joint", (320, 512)),  # a GPU: long side up to 512
        ((480, 640), CPU, "fcn", (160, 192)),  # FCN: multiples of 32
        ((640, 480), CPU, "unet", (192, 144)),  # portrait
        ((52, 64), CPU, "unet", (48, 64)),  # never above the scans' own size
        ((20, 30), CPU, "unet", (16, 32)),  # at least one multiple a side
    ],
)
def test_input_size_keeps_the_aspect_ratio(size, device, arch, expected) -> None:
    config = load_config(overrides={"arch": arch, "training.epochs": 1})
    plan = make_plan(config, scans(*size), device, step_seconds=constant_step(0.1))
    assert tuple(plan.values["data.image_size"]) == expected
    multiple = 32 if arch == "fcn" else 16
    assert all(side % multiple == 0 for side in expected)
    # The planned aspect is the scans' aspect, within what rounding to the multiple allows.
    assert expected[1] / expected[0] == pytest.approx(size[1] / size[0], abs=multiple / expected[0])


@pytest.mark.parametrize(
    ("size", "depth"), [((128, 192), 4), ((96, 128), 4), ((256, 384), 5), ((32, 32), 2)]
)
def test_depth_leaves_a_bottleneck_of_at_least_six_pixels(size, depth) -> None:
    config = load_config(overrides={"data.image_size": list(size), "training.epochs": 1})
    plan = make_plan(config, scans(*size), CPU)
    assert plan.values["model.unet-joint.depth"] == depth
    assert min(size) // 2**depth >= CPU_RULES.min_bottleneck_side


def test_steps_fill_the_budget_and_are_not_epochs() -> None:
    config = load_config(overrides={"training.budget_minutes": 2.0})
    step_seconds = constant_step(0.25)
    plan = make_plan(config, scans(173, 256, images=1000), CPU, step_seconds=step_seconds)
    steps = plan.values["training.steps"]
    assert "training.epochs" not in plan.values
    # 90 % of 2 minutes at 0.25 s a step, and never more than the budget.
    assert steps == math.floor(0.9 * 120 / 0.25)
    assert steps * 0.25 <= 2.0 * 60
    planned = plan.apply(config)
    assert planned.training.epochs is None and planned.training.steps == steps
    # The step was timed on the planned model, size and batch.
    timed = step_seconds.calls[0]
    assert timed.data.image_size == (128, 192) and timed.training.batch_size == 8
    # A run goes in whole passes: 24 steps a pass -> ceil(steps / 24) epochs.
    assert run_epochs(planned, 24) == math.ceil(steps / 24)


def test_steps_stop_at_the_pass_cap_on_a_tiny_set() -> None:
    config = load_config(overrides={"training.budget_minutes": 60.0})
    plan = make_plan(config, scans(64, 64, images=10), CPU, step_seconds=constant_step(0.001))
    # 6 training images (60 %) at batch 6: one step a pass, 1000 passes at most.
    assert plan.values["training.batch_size"] == 6
    assert plan.values["training.steps"] == CPU_RULES.max_passes
    assert "capped" in plan.reasons["training.steps"]


def test_the_device_sets_the_defaults() -> None:
    config = load_config(overrides={"training.epochs": 1})
    cpu = make_plan(config, scans(96, 128), CPU).values
    gpu = make_plan(config, scans(96, 128), GPU).values
    assert (cpu["model.base_filters"], cpu["training.batch_size"]) == (8, 8)
    assert (gpu["model.base_filters"], gpu["training.batch_size"]) == (32, 16)
    budget = load_config()
    assert make_plan(budget, scans(96, 96), GPU, step_seconds=constant_step(1)).values[
        "training.budget_minutes"
    ] == pytest.approx(30.0)


def test_a_small_device_memory_lowers_the_batch() -> None:
    config = load_config(overrides={"training.epochs": 1})
    small = DeviceInfo("cpu", "small", 64 * 2**20)
    plan = make_plan(config, scans(173, 256), small)
    assert 1 <= plan.values["training.batch_size"] < CPU_RULES.batch_size
    assert "by memory" in plan.reasons["training.batch_size"]


def test_what_the_user_sets_wins() -> None:
    config = load_config(
        overrides={
            "data.image_size": [64, 96],
            "model.base_filters": 4,
            "model.unet-joint.depth": 3,
            "training.batch_size": 2,
            "training.steps": 50,
        }
    )
    assert auto_keys(config) == []
    plan = make_plan(config, scans(173, 256), CPU, step_seconds=constant_step(1))
    assert plan.values == {}
    assert "set in the configuration" in plan.reasons["data.image_size"]
    assert plan.apply(config) == config
    epochs = load_config(overrides={"training.epochs": 3})
    assert "training.steps" not in auto_keys(epochs)
    assert run_epochs(epochs.replace({"training.steps": 1000}), 10) == 3  # epochs win


def test_a_multi_worker_run_must_fix_its_steps() -> None:
    config = load_config(overrides={"training.distribution": "multi_worker"})
    with pytest.raises(ConfigError, match="multi_worker"):
        make_plan(config, scans(96, 96), CPU, step_seconds=constant_step(1))


def test_warm_up_then_cosine_decay_over_the_planned_steps() -> None:
    config = load_config(overrides={"training.steps": 200, "training.warmup_fraction": 0.1})
    schedule = learning_rate(config, steps_per_epoch=20)  # 10 epochs = 200 steps
    rate = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 10, 20, 110, 200)]
    peak = config.training.learning_rate
    assert rate[0] == 0.0
    assert rate[1] == pytest.approx(peak / 2, rel=1e-5)
    assert rate[2] == pytest.approx(peak, rel=1e-5)
    assert rate[3] == pytest.approx(peak * (0.01 + 0.99 * 0.5), rel=1e-4)  # half-way down
    assert rate[4] == pytest.approx(peak * 0.01, rel=1e-4)


def test_measured_step_seconds_are_a_real_time() -> None:
    config = load_config(overrides={**TINY_RUN_CONFIG, "data.image_size": [32, 48]})
    seconds = measure_step_seconds(config, steps=2)
    assert 0 < seconds < 30


def test_plan_run_plans_from_the_data_and_changes_nothing_set(tiny_dataset: Path) -> None:
    config = load_config(overrides={**TINY_RUN_CONFIG, "data.image_size": "auto"})
    planned, plan = plan_run(config, tiny_dataset / "manifest.csv", device=CPU)
    assert planned.data.image_size == (48, 64)
    assert planned.model.base_filters == 4 and planned.training.epochs == 2
    assert plan.values == {"data.image_size": [48, 64]}
    same, none = plan_run(planned, tiny_dataset / "manifest.csv", device=CPU)
    assert same is planned and none is None


def test_a_planned_run_writes_its_plan_and_trains_whole_passes(tmp_path: Path) -> None:
    from cervixnet.runs import train

    write_tiny_dataset(tmp_path / "data", n_patients=10)
    overrides = {**TINY_RUN_CONFIG, "training.epochs": None, "training.steps": 7}
    config = load_config(overrides={**overrides, "data.path": str(tmp_path / "data")})
    config = config.replace({"training.epochs": None, "data.image_size": "auto"})
    result = train(config, tmp_path / "run", verbose=0, echo=lambda _: None)
    saved = (tmp_path / "run" / "config.yaml").read_text(encoding="utf-8")
    assert saved.startswith("# The plan:")
    assert "data.image_size" in saved.splitlines()[3]
    values = yaml.safe_load(saved)
    assert values["data"]["image_size"] == [48, 64]
    manifest = read_manifest(Path(result.metrics["prepared_data"]) / "manifest.csv")
    indices = Splits.load(tmp_path / "run" / "splits.json").indices(manifest)
    steps_per_epoch = training_inputs(load_config(tmp_path / "run" / "config.yaml"), manifest,
                                      indices).steps_per_epoch  # fmt: skip
    assert values["training"]["steps"] == 7
    assert values["training"]["epochs"] == math.ceil(7 / steps_per_epoch) > 1
    assert result.metrics["epochs"] == values["training"]["epochs"]
    plan = json.loads((tmp_path / "run" / "plan.json").read_text(encoding="utf-8"))
    assert plan["values"] == {"data.image_size": [48, 64]}
    assert plan["fingerprint"]["median_size"] == [52, 64]
    # Reloading the saved configuration needs no plan.
    assert auto_keys(load_config(tmp_path / "run" / "config.yaml")) == []


def test_cli_plan_prints_the_reasons_and_writes_a_config(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "planned.yaml"
    result = CliRunner().invoke(
        main, ["plan", str(tiny_dataset), "--steps", "30", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "48 x 64: the median scan (52 x 64" in result.output
    assert "training.steps" in result.output and "30: set in the configuration" in result.output
    planned = load_config(out)
    assert planned.data.image_size == (48, 64) and planned.training.steps == 30
    assert auto_keys(planned) == []
    again = CliRunner().invoke(main, ["plan", str(tiny_dataset), "--out", str(out)])
    assert again.exit_code != 0 and "exists" in again.output
    assert np.isfinite(planned.training.learning_rate)


def test_the_checkpoint_follows_the_validation_dice_unless_set() -> None:
    from cervixnet.training.fit import checkpoint_monitor

    config = load_config()
    assert checkpoint_monitor(config, joint=True) == "val_mask_dice"
    assert checkpoint_monitor(config, joint=False) == "val_dice"
    chosen = config.replace({"training.monitor": "val_loss"})
    assert checkpoint_monitor(chosen, joint=True) == "val_loss"
    assert load_config("plain").training.monitor == "val_loss"  # the recipe before the plan
