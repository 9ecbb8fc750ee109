"""The command line: help, one-line errors with a non-zero exit, and a tiny training run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cervixnet.cli.main import main
from tests.conftest import TINY_CONFIG, rewrite_manifest, run_cli


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def test_help_lists_commands_and_options():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    assert "train" in top.output and "data" in top.output
    train_help = runner.invoke(main, ["train", "--help"])
    for option in ("--arch", "--config", "--data", "--out", "--epochs", "--batch-size", "--seed"):
        assert option in train_help.output
    assert "unet-joint" in train_help.output
    assert "--out" in runner.invoke(main, ["data", "synth", "--help"]).output


def test_unknown_arch_is_one_line_error():
    result = run_cli("train", "--arch", "resnet")
    assert result.returncode == 2
    assert "Invalid value for '--arch'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_folder(tmp_path: Path):
    result = run_cli("train", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_manifest_missing_column(tiny_dataset: Path, tmp_path: Path):
    def drop_label(fields, rows):
        return [f for f in fields if f != "label"], [
            {k: v for k, v in r.items() if k != "label"} for r in rows
        ]

    rewrite_manifest(tiny_dataset / "manifest.csv", drop_label)
    result = run_cli("train", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "manifest.csv: missing required column(s) label" in result.stderr
    assert "Traceback" not in result.stderr
    # TensorFlow's own start-up lines may come first; cervixnet's error is the one last line.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "missing required column(s) label" in last
    assert not (tmp_path / "run").exists()


def test_unknown_config_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epoch: 3\n")
    result = run_cli("train", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}: unknown key 'training.epoch'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_builder_option(tiny_dataset: Path, tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  unet-joint:\n    depht: 3\n")
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(path),
            "--data",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1
    assert "unknown key 'model.unet-joint.depht'" in result.output


def test_refuses_to_overwrite_a_run(tiny_dataset: Path, tmp_path: Path, tiny_config: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_text("precious")
    result = CliRunner().invoke(
        main,
        ["train", "--config", str(tiny_config), "--data", str(tiny_dataset), "--out", str(run)],
    )
    assert result.exit_code == 1
    assert "already holds a run" in result.output
    assert (run / "model.keras").read_text() == "precious"


def test_tiny_training_run_writes_a_run_folder(
    tiny_dataset: Path, tmp_path: Path, tiny_config: Path
):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--arch",
            "unet-joint",
            "--config",
            str(tiny_config),
            "--data",
            str(tiny_dataset),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in (
        "config.yaml",
        "splits.json",
        "model.keras",
        "history.csv",
        "metrics.json",
        "predictions.csv",
    ):
        assert (run / name).is_file(), name
    assert list((run / "logs").rglob("*tfevents*"))
    history = (run / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + 2 epochs
    assert "val_loss" in history[0] and "mask_iou" in history[0] and "label_auc" in history[0]
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        figures = metrics["splits"][split]
        assert set(figures["segmentation"]) >= {"iou_mean", "iou_std", "dice_mean", "dice_std"}
        assert set(figures["classification"]) >= {"auc", "precision", "recall", "specificity"}
    resolved = (run / "config.yaml").read_text()
    assert "epochs: 2" in resolved and "seed: 3" in resolved and str(tiny_dataset) in resolved
    assert "IoU" in result.output and "test" in result.output


@pytest.mark.parametrize("arch", ["unet", "fcn", "deeplabv3"])
def test_segmentation_only_architectures_train(
    arch, tiny_dataset: Path, tmp_path: Path, tiny_config: Path
):
    run = tmp_path / arch
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--arch",
            arch,
            "--config",
            str(tiny_config),
            "--data",
            str(tiny_dataset),
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert "classification" not in metrics["splits"]["test"]
    assert 0.0 <= metrics["splits"]["test"]["segmentation"]["iou_mean"] <= 1.0


def test_model_reloads_in_a_fresh_process(tiny_dataset: Path, tmp_path: Path, tiny_config: Path):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["train", "--config", str(tiny_config), "--data", str(tiny_dataset), "--out", str(run)],
    )
    assert result.exit_code == 0, result.output
    code = (
        "import sys, numpy as np, keras\n"
        "from cervixnet import losses, metrics, models  # registers them with Keras\n"
        f"model = keras.models.load_model({str(run / 'model.keras')!r})\n"
        "assert model.compiled and model.loss['mask'].__class__.__module__ == losses.__name__\n"
        "outputs = model.predict(np.zeros((1, 32, 32, 1), 'float32'), verbose=0)\n"
        "mask, label = outputs['mask'], outputs['label']\n"
        "assert mask.shape == (1, 32, 32, 1) and label.shape == (1, 1)\n"
        "print('ok', float(label[0, 0]))\n"
    )
    reloaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.startswith("ok")


def test_data_synth_writes_the_manifest_format(tmp_path: Path):
    out = tmp_path / "synthetic"
    result = CliRunner().invoke(
        main, ["data", "synth", "--out", str(out), "--n-images", "12", "--n-preterm", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "Wrote 12 images (2 preterm)" in result.output and "best possible AUC" in result.output
    from cervixnet.data.manifest import read_manifest

    manifest = read_manifest(out)
    assert len(manifest.records) == 12
    assert sum(r.label for r in manifest.records) == 2


def test_data_synth_refuses_a_foreign_folder(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_default_data_is_the_cached_synthetic_set(tmp_path: Path):
    config = tmp_path / "synthetic.yaml"
    synthetic = "data:\n  synthetic:\n    n_images: 40\n    n_preterm: 8\n    seed: 2\n"
    config.write_text(TINY_CONFIG.replace("data:\n", synthetic))
    cache = tmp_path / "cache"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(config),
            "--cache-dir",
            str(cache),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    manifests = list(cache.glob("synthetic-*/manifest.csv"))
    assert len(manifests) == 1
    assert "built-in synthetic set" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # The synthetic manifest carries the generator's risk: its AUC is reported beside the model's.
    assert "best_auc" in metrics["splits"]["train"]["classification"]
    # A second run reuses the cache instead of generating again.
    before = manifests[0].stat().st_mtime_ns
    again = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(config),
            "--cache-dir",
            str(cache),
            "--out",
            str(tmp_path / "run2"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert manifests[0].stat().st_mtime_ns == before
