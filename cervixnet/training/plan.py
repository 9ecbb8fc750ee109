"""A training plan made from the data set and the device, as nnU-Net plans its networks.

Every configuration key whose value is ``auto`` is decided here, with a reason that
``cervixnet plan`` prints and ``cervixnet train`` writes into the run's ``config.yaml`` and
``plan.json``; a value the user set is kept as it is. The rules:

- ``data.image_size``: the median scan's aspect ratio kept, its long side at most
  ``max_side`` (192 on a CPU, 512 on a GPU) and never above the scans' own, each side a
  multiple of the architecture's ``2**depth`` (16; 32 for FCN). Scans of another shape are
  letterboxed into it (``data.resize``), never squashed.
- ``model.<arch>.depth`` (U-Nets): the most halvings, up to 5, that leave at least
  ``min_bottleneck_side`` (6) pixels on the short side of the bottleneck.
- ``model.base_filters``: 8 on a CPU, 32 on a GPU.
- ``training.batch_size``: 8 on a CPU, 16 on a GPU, fewer when the model's activations for a
  batch would take more than a quarter of the device's memory, and never more than the
  training images.
- ``training.steps``: as many optimizer steps as fit in 90 % of ``training.budget_minutes``
  (5 on a CPU, 30 on a GPU), from the time of a few real training steps of the planned model
  on this device (:func:`measure_step_seconds`), at most ``max_passes`` passes over the
  training split. The run is rounded up to whole passes (epochs).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cervixnet import models
from cervixnet.config import AUTO, Config
from cervixnet.data.fingerprint import DataFingerprint, fingerprint, json_ready
from cervixnet.errors import ConfigError
from cervixnet.training.build import build_network, compile_model


@dataclasses.dataclass(frozen=True)
class PlanningRules:
    """The device-dependent defaults of a plan (see the module docstring)."""

    max_side: int
    base_filters: int
    batch_size: int
    budget_minutes: float
    min_bottleneck_side: int = 6
    max_depth: int = 5
    memory_fraction: float = 0.25
    budget_fraction: float = 0.9
    max_passes: int = 1000


CPU_RULES = PlanningRules(max_side=192, base_filters=8, batch_size=8, budget_minutes=5.0)
GPU_RULES = PlanningRules(max_side=512, base_filters=32, batch_size=16, budget_minutes=30.0)


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """The device a run trains on: ``kind`` ``"cpu"`` or ``"gpu"``, a name, its memory."""

    kind: str
    name: str
    memory_bytes: int

    @property
    def rules(self) -> PlanningRules:
        return GPU_RULES if self.kind == "gpu" else CPU_RULES


def this_device() -> DeviceInfo:
    """The first GPU TensorFlow sees, else the CPU (memory: the machine's RAM).

    A GPU's memory is read from ``nvidia-smi`` where it is installed; 16 GiB is assumed
    where it is not.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return DeviceInfo("gpu", details.get("device_name", gpus[0].name), _gpu_memory())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DeviceInfo("cpu", f"CPU, {os.cpu_count()} cores", int(memory))


def _gpu_memory() -> int:
    command = shutil.which("nvidia-smi")
    if command is not None:
        try:
            output = subprocess.run(
                [command, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout  # fmt: skip
            return int(float(output.split()[0]) * 2**20)
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    return 16 * 2**30


@dataclasses.dataclass(frozen=True)
class Plan:
    """The planned values of a run and why.

    Attributes:
        fingerprint: the data set's (``cervixnet.data.fingerprint``).
        device: where the plan was made.
        values: dotted configuration key -> planned value, for the keys that were ``auto``.
        reasons: dotted key -> why it has its value (planned or set by the user).
        seconds_per_step: the measured time of one training step, when steps were planned.
    """

    fingerprint: DataFingerprint
    device: DeviceInfo
    values: dict[str, Any]
    reasons: dict[str, str]
    seconds_per_step: float | None = None

    def apply(self, config: Config) -> Config:
        """``config`` with the planned values in place of ``auto``."""
        return config.replace(self.values, source="plan")

    def to_dict(self) -> dict[str, Any]:
        return json_ready(
            {
                "device": dataclasses.asdict(self.device),
                "fingerprint": self.fingerprint.to_dict(),
                "values": self.values,
                "reasons": self.reasons,
                "seconds_per_step": self.seconds_per_step,
            }
        )

    def format(self) -> str:
        """The plan as text: one line per key, its value and the reason."""
        fp = self.fingerprint
        spacing = "no spacing" if fp.spacing_mm is None else f"{fp.spacing_mm:g} mm/pixel"
        foreground = (
            "no masks" if fp.foreground_fraction is None
            else f"mask covers {100 * fp.foreground_fraction:.1f} % (median)"
        )  # fmt: skip
        labels = ", ".join(f"{v} {k}" for k, v in fp.labels.items() if v)
        lines = [
            f"Data: {fp.images} images of {fp.patients} patients; median {fp.median_size[0]} x "
            f"{fp.median_size[1]} pixels (aspect {fp.aspect_ratio:.2f}); {spacing}; "
            f"{foreground}; labels: {labels}",
            f"Device: {self.device.name} ({self.device.kind})",
        ]
        width = max((len(k) for k in self.reasons), default=0)
        for key, reason in self.reasons.items():
            lines.append(f"  {key.ljust(width)}  {reason}")
        return "\n".join(lines)

    def comment(self) -> str:
        """The plan as YAML comment lines, for the head of a run's ``config.yaml``."""
        return "".join(f"# {line}\n" for line in ["The plan:", *self.format().splitlines()])


def auto_keys(config: Config) -> list[str]:
    """The dotted keys of ``config`` that are ``auto`` and so left to the plan.

    ``training.steps`` counts only while ``training.epochs`` is unset, and ``training.
    budget_minutes`` only while steps are planned.
    """
    keys = []
    if config.data.image_size == AUTO:
        keys.append("data.image_size")
    arch_options = getattr(config.model, config.arch.replace("-", "_"))
    if arch_options.get("depth") == AUTO:
        keys.append(f"model.{config.arch}.depth")
    if config.model.base_filters == AUTO:
        keys.append("model.base_filters")
    if config.training.batch_size == AUTO:
        keys.append("training.batch_size")
    if config.training.epochs is None and config.training.steps == AUTO:
        keys.append("training.steps")
        if config.training.budget_minutes == AUTO:
            keys.append("training.budget_minutes")
    return keys


def make_plan(
    config: Config,
    data: DataFingerprint,
    device: DeviceInfo,
    *,
    step_seconds: Callable[[Config], float] | None = None,
    size_multiple: int | None = None,
    keys: Collection[str] | None = None,
) -> Plan:
    """Decides every ``auto`` key of ``config`` from ``data`` and ``device``.

    Args:
        config: the run's configuration; keys that are not ``auto`` are kept.
        data: the data set's fingerprint.
        device: the device to plan for; its ``rules`` give the defaults.
        step_seconds: ``fn(config) -> seconds`` of one training step of the fully planned
            configuration but its steps; default :func:`measure_step_seconds`.
        size_multiple: what the input's sides must be multiples of; default 16, or 32 for
            FCN (a comparison of several networks passes the largest).
        keys: plan only these of the ``auto`` keys (``cervixnet data prepare`` plans
            ``data.image_size`` alone); default all.

    Raises:
        ConfigError: a multi-worker run left its steps to the plan (each worker would time
            its own).
    """
    rules = device.rules
    planned = set(auto_keys(config)) if keys is None else set(auto_keys(config)) & set(keys)
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    arch = config.arch

    size = config.data.image_size
    multiple = size_multiple or (32 if arch == "fcn" else 16)
    if "data.image_size" in planned:
        size = _input_size(data, rules.max_side, multiple)
        values["data.image_size"] = list(size)
        reasons["data.image_size"] = (
            f"{size[0]} x {size[1]}: the median scan ({data.median_size[0]} x "
            f"{data.median_size[1]}, aspect {data.aspect_ratio:.2f}) with its long side at most "
            f"{rules.max_side} on a {device.kind.upper()}, sides multiples of {multiple}"
        )
    else:
        reasons["data.image_size"] = f"{size[0]} x {size[1]}: set in the configuration"
    reasons["data.resize"] = (
        f"{config.data.resize}: "
        + ("scans of another shape are fitted with their aspect kept and padded"
           if config.data.resize == "letterbox" else "every scan is squashed to the input")
    )  # fmt: skip

    depth_key = f"model.{arch}.depth"
    if depth_key in planned:
        depth = _depth(size, rules)
        values[depth_key] = depth
        bottleneck = (size[0] // 2**depth, size[1] // 2**depth)
        reasons[depth_key] = (
            f"{depth}: the most halvings (up to {rules.max_depth}) that leave at least "
            f"{rules.min_bottleneck_side} pixels a side (bottleneck {bottleneck[0]} x "
            f"{bottleneck[1]})"
        )

    if "model.base_filters" in planned:
        values["model.base_filters"] = rules.base_filters
        reasons["model.base_filters"] = f"{rules.base_filters}: the default on a {device.kind}"
    else:
        reasons["model.base_filters"] = f"{config.model.base_filters}: set in the configuration"

    train_images = max(1, math.floor(data.images * config.data.split[0]))
    if "training.batch_size" in planned:
        resolved = config.replace(values, source="plan")
        per_image = activation_bytes(resolved)
        by_memory = max(1, int(rules.memory_fraction * device.memory_bytes // max(per_image, 1)))
        batch = max(1, min(rules.batch_size, by_memory, train_images))
        values["training.batch_size"] = batch
        limits = [f"{rules.batch_size} on a {device.kind}"]
        if by_memory < rules.batch_size:
            limits.append(
                f"{by_memory} by memory ({per_image / 2**20:.0f} MiB of activations an image)"
            )
        if train_images < rules.batch_size:
            limits.append(f"{train_images} training images")
        reasons["training.batch_size"] = f"{batch}: the least of " + ", ".join(limits)
    batch = values.get("training.batch_size", config.training.batch_size)

    seconds = None
    if "training.steps" in planned:
        if config.training.distribution == "multi_worker":
            raise ConfigError(
                "training.steps: auto times the training step on each worker, which could "
                "disagree; set training.steps or training.epochs for a multi_worker run"
            )
        budget = config.training.budget_minutes
        if "training.budget_minutes" in planned:
            budget = rules.budget_minutes
            values["training.budget_minutes"] = budget
            reasons["training.budget_minutes"] = f"{budget:g}: the default on a {device.kind}"
        resolved = config.replace({**values, "training.epochs": 1}, source="plan")
        seconds = float((step_seconds or measure_step_seconds)(resolved))
        passes_cap = rules.max_passes * math.ceil(train_images / batch)
        by_budget = max(1, math.floor(rules.budget_fraction * budget * 60 / seconds))
        steps = min(by_budget, passes_cap)
        values["training.steps"] = steps
        reasons["training.steps"] = (
            f"{steps}: {seconds:.3f} s a step measured here at batch {batch}; "
            f"{100 * rules.budget_fraction:.0f} % of the {budget:g}-minute budget"
            + (f", capped at {rules.max_passes} passes" if steps < by_budget else "")
            + f" (about {steps * batch / train_images:.0f} passes over ~{train_images} "
            "training images)"
        )
    elif config.training.epochs is not None:
        reasons["training.epochs"] = f"{config.training.epochs}: set in the configuration"
    else:
        reasons["training.steps"] = f"{config.training.steps}: set in the configuration"
    return Plan(data, device, values, reasons, seconds)


def plan_run(
    config: Config,
    manifest_path: str | Path,
    *,
    device: DeviceInfo | None = None,
    step_seconds: Callable[[Config], float] | None = None,
    size_multiple: int | None = None,
    keys: Collection[str] | None = None,
) -> tuple[Config, Plan | None]:
    """``config`` with its ``auto`` keys planned from the data at ``manifest_path``
    (arguments as :func:`make_plan`).

    Returns the configuration unchanged and ``None`` when nothing is ``auto``.
    """
    if not (set(auto_keys(config)) & set(keys) if keys is not None else auto_keys(config)):
        return config, None
    plan = make_plan(
        config,
        fingerprint(
            manifest_path, mask_column=config.data.mask_column, classes=config.data.classes
        ),
        device or this_device(),
        step_seconds=step_seconds,
        size_multiple=size_multiple,
        keys=keys,
    )
    return plan.apply(config), plan


def plan_model(config: Config, device: DeviceInfo | None = None) -> Config:
    """``config`` with the model's ``auto`` keys that need no data decided: the U-Nets'
    ``depth`` from ``data.image_size`` and ``model.base_filters`` from the device (``device``,
    default :func:`this_device`), by :func:`make_plan`'s rules. ``build_model`` calls it, so a
    configuration with a fixed input size builds without a plan.
    """
    values: dict[str, Any] = {}
    depth_key = f"model.{config.arch}.depth"
    if depth_key in auto_keys(config) and config.data.image_size != AUTO:
        values[depth_key] = _depth(config.data.image_size, (device or this_device()).rules)
    if config.model.base_filters == AUTO:
        values["model.base_filters"] = (device or this_device()).rules.base_filters
    return config.replace(values, source="plan") if values else config


def _input_size(data: DataFingerprint, max_side: int, multiple: int) -> tuple[int, int]:
    height, width = data.median_size
    long_side = min(max_side, max(height, width))
    scale = long_side / max(height, width)

    def rounded(side: float) -> int:
        return max(multiple, math.floor(side / multiple + 0.5) * multiple)  # halves up

    return rounded(height * scale), rounded(width * scale)


def _depth(size, rules: PlanningRules) -> int:
    depth = 1
    for candidate in range(1, rules.max_depth + 1):
        fits = all(side % 2**candidate == 0 for side in size)
        if fits and min(size) // 2**candidate >= rules.min_bottleneck_side:
            depth = candidate
    return depth


def activation_bytes(config: Config) -> int:
    """Bytes of training memory one image takes in the model of ``config``: every layer's
    output in float32, three times (the output, its gradient and a working copy)."""
    with _KeptRandomState():
        float32 = config.replace({"training.precision": "float32"}, source="plan")
        model = build_network(plan_model(float32))
    total = 0
    for layer in model.layers:
        for output in keras.tree.flatten(layer.output):
            total += int(np.prod([d for d in output.shape[1:] if d is not None]))
    return 3 * 4 * total


def measure_step_seconds(config: Config, steps: int = 4) -> float:
    """Median wall-clock seconds of one training step of ``config``'s model on this device.

    The model is built and compiled as ``cervixnet train`` builds it, fed batches of
    ``training.batch_size`` random images with the run's augmentation, and timed over
    ``steps`` steps after one warm-up step (tracing and compiling are not counted).
    """
    import tensorflow as tf

    from cervixnet.data.pipeline import build_augmenter

    height, width = config.data.image_size
    batch = config.training.batch_size
    joint = models.is_joint(config.arch)
    rng = np.random.default_rng(0)
    images = rng.random((batch, height, width, config.data.channels), dtype=np.float32)
    masks = (rng.random((batch, height, width, 1)) > 0.5).astype(np.float32)
    labels = (np.arange(batch) % 2).astype(np.float32)[:, None]
    augment = build_augmenter(config.data.augment)

    def element(index):
        pixels, mask = tf.constant(images), tf.constant(masks)
        if augment is not None:
            pixels, mask = augment(pixels, mask, tf.stack([index, tf.constant(0, tf.int64)]))
        return pixels, ({"mask": mask, "label": tf.constant(labels)} if joint else mask)

    dataset = tf.data.Dataset.range(steps + 1).map(element).prefetch(1)
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.started)

    with _KeptRandomState():
        model = build_network(plan_model(config))
        compile_model(model, config, positive_weight=1.0, steps_per_epoch=steps + 1)
        model.fit(
            dataset,
            epochs=1,
            steps_per_epoch=steps + 1,
            verbose=0,
            shuffle=False,
            callbacks=[Timer()],
        )
    return float(np.median(times[1:]))


class _KeptRandomState:
    """Puts Python's and NumPy's global random state back on exit, so that a plan leaves
    the run's initialisation as it would have been without it."""

    def __enter__(self):
        import random

        self.python = random.getstate()
        self.numpy = np.random.get_state()
        return self

    def __exit__(self, *exc):
        import random

        random.setstate(self.python)
        np.random.set_state(self.numpy)
        return False
