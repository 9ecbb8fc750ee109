"""Shared fixtures: a tiny data set in the manifest format, written with OpenCV."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cervixnet.cli.quiet import set_environment

# Before any test module loads TensorFlow: every test process then starts TensorFlow with the
# settings of the `cervixnet` command (oneDNN on x86-64, errors-only C++ logs).
set_environment(verbose=False)

import keras  # noqa: E402  (after TensorFlow's environment is set)

# Registers cervixnet's layers, losses and metrics with Keras, for tests that load model files
# with keras.models.load_model.
from cervixnet import losses, metrics, models  # noqa: E402, F401


def write_tiny_dataset(folder: Path, n_patients: int = 10, images_per_patient: int = 2) -> Path:
    """Writes colour images with a bright ellipse (the 'cervix'), its mask and a manifest.

    Patients with an even index are controls, odd ones preterm. Returns the manifest path.
    """
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for patient in range(n_patients):
        for k in range(images_per_patient):
            height, width = 48 + 8 * (k % 2), 64
            mask = np.zeros((height, width), np.uint8)
            center = (int(rng.integers(24, 40)), int(rng.integers(20, height - 20)))
            cv2.ellipse(mask, center, (14, 8), float(rng.integers(0, 180)), 0, 360, 255, -1)
            gray = (rng.random((height, width)) * 60).astype(np.uint8)
            gray[mask > 0] += 150
            image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
            name = f"p{patient:02d}_{k}.png"
            cv2.imwrite(str(folder / "images" / name), image)
            cv2.imwrite(str(folder / "masks" / name), mask)
            rows.append(
                {
                    "image": f"images/{name}",
                    "patient_id": f"p{patient:02d}",
                    "label": str(patient % 2),
                    "mask": f"masks/{name}",
                    "site": "A",
                }
            )
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keeps the synthetic and prepared data caches of the tests out of the user's cache."""
    import os

    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A fresh tiny data set folder (10 patients, 20 images) per test."""
    write_tiny_dataset(tmp_path / "data")
    return tmp_path / "data"


def rewrite_manifest(manifest: Path, edit) -> None:
    """Applies ``edit(rows) -> (fieldnames, rows)`` to a manifest in place (test data only)."""
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fieldnames, rows = edit(list(reader.fieldnames), list(reader))
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


# The tiny configuration of command-line tests, as a YAML file's text.
TINY_CONFIG = """
data:
  image_size: [32, 32]
  augment:
    crop: 0.0
model:
  base_filters: 4
  unet-joint:
    depth: 2
    classifier_units: [8]
  unet:
    depth: 2
  deeplabv3:
    blocks_per_stage: [1, 1, 1, 1]
training:
  batch_size: 4
  epochs: 1
"""

TINY_RUN_CONFIG = {
    "data.image_size": [32, 32],
    "data.augment.crop": 0.0,
    "model.base_filters": 4,
    "model.unet-joint": {"depth": 2, "classifier_units": [8]},
    "training.batch_size": 8,
    "training.epochs": 2,
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A joint model trained for two epochs on a tiny data set (20 patients): its run folder."""
    from cervixnet.config import load_config
    from cervixnet.runs import train

    folder = tmp_path_factory.mktemp("tiny-run")
    data = folder / "data"
    write_tiny_dataset(data, n_patients=20)
    config = load_config(overrides={**TINY_RUN_CONFIG, "data.path": str(data)})
    train(config, folder / "run", verbose=0, echo=lambda _: None)
    return folder / "run"


def set_trained_statistics(model: keras.Model, seed: int = 0) -> None:
    """Moving statistics, gammas and betas far from their initial 0 and 1."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 1.0, channels))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0.0, 0.3, channels))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs the real command in a fresh interpreter, as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "cervixnet.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
