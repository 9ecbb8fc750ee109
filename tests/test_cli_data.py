"""The data workflow from the command line: prepare, train on raw or prepared folders, folds."""

import csv
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.data.splits import Splits
from tests.conftest import TINY_CONFIG, rewrite_manifest, write_tiny_dataset


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_prepare_then_train_on_the_prepared_folder(
    tiny_dataset: Path, tmp_path: Path, tiny_config: Path
):
    before = tree_digest(tiny_dataset)
    prepared = tmp_path / "prepared"
    result = invoke(
        "data", "prepare", tiny_dataset, "--out", prepared, "--config", tiny_config, "--seed", 3
    )
    assert result.exit_code == 0, result.output
    assert "| train |" in result.output and f"Prepared data set: {prepared}" in result.output
    assert (prepared / "report.md").is_file() and (prepared / "splits.json").is_file()
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    result = invoke(
        "train", "--data", prepared, "--config", tiny_config, "--seed", 3, "--out", run,
        "--cache-dir", cache,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Preparing" not in result.output and not (cache / "prepared").exists()
    ran, saved = Splits.load(run / "splits.json"), Splits.load(prepared / "splits.json")
    assert (ran.train, ran.val, ran.test) == (saved.train, saved.val, saved.test)
    assert tree_digest(tiny_dataset) == before
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    assert rows[0]["source_image"].startswith("images/p")


def test_raw_folder_with_bezier_points_is_prepared_once(tiny_dataset: Path, tmp_path: Path):
    def points_instead_of_masks(fields, rows):
        for k, row in enumerate(rows):
            row["mask"] = ""
            row["bezier"] = "" if k == 0 else "20,14 44,12 46,34 22,36"
        return [*fields, "bezier"], rows

    rewrite_manifest(tiny_dataset / "manifest.csv", points_instead_of_masks)
    before = tree_digest(tiny_dataset)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    cache = tmp_path / "cache"
    first = invoke(
        "train", "--data", tiny_dataset, "--config", config, "--out", tmp_path / "a",
        "--cache-dir", cache,
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "Preparing" in first.output
    copies = list((cache / "prepared").glob("*/manifest.csv"))
    assert len(copies) == 1
    prepared_rows = list(csv.DictReader(copies[0].open()))
    assert [r["mask_source"] for r in prepared_rows].count("bezier") == 19
    assert prepared_rows[0]["mask"] == "" and prepared_rows[0]["mask_source"] == "none"
    second = invoke(
        "train", "--data", tiny_dataset, "--config", config, "--out", tmp_path / "b",
        "--cache-dir", cache,
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    assert "Preparing" not in second.output
    assert tree_digest(tiny_dataset) == before


def test_broken_manifest_is_refused_before_training(tiny_dataset: Path, tmp_path: Path):
    def break_rows(fields, rows):
        rows[0]["label"] = "2"
        rows[3]["image"] = "images/missing.png"
        return fields, rows

    rewrite_manifest(tiny_dataset / "manifest.csv", break_rows)
    before = tree_digest(tiny_dataset)
    run = tmp_path / "run"
    result = invoke("train", "--data", tiny_dataset, "--out", run, "--cache-dir", tmp_path / "c")
    assert result.exit_code == 1
    assert "row 2, column 'label'" in result.output and "1 more problem" in result.output
    assert "Traceback" not in result.output
    assert not run.exists() and not list((tmp_path / "c").rglob("manifest.csv"))
    assert tree_digest(tiny_dataset) == before


def test_folds_write_one_run_per_fold_and_a_summary(
    tiny_dataset: Path, tmp_path: Path, tiny_config: Path
):
    out = tmp_path / "cv"
    result = invoke(
        "train", "--data", tiny_dataset, "--config", tiny_config, "--folds", 2, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "mean ± std" in result.output and "2-fold cross-validation" in result.output
    for k in (1, 2):
        assert (out / f"fold-{k}" / "model.keras").is_file()
    tested = [set(json.loads((out / f"fold-{k}" / "splits.json").read_text())["test"]["patients"])
              for k in (1, 2)]  # fmt: skip
    assert not tested[0] & tested[1] and len(tested[0] | tested[1]) == 10
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["fold"] for r in rows] == ["1", "2", "mean", "std"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["folds"] == 2 and 0 <= summary["mean"]["iou"] <= 1


def test_folds_refuse_a_splits_file(tiny_dataset: Path, tmp_path: Path):
    splits = tmp_path / "splits.json"
    splits.write_text("{}")
    result = invoke("train", "--data", tiny_dataset, "--folds", 2, "--splits", splits)
    assert result.exit_code == 1 and "cannot be combined with --folds" in result.output


def test_paper_protocol_evaluates_on_balanced_augmented_copies(tmp_path: Path):
    data = tmp_path / "data"
    write_tiny_dataset(data, n_patients=20)

    def thirty_percent_preterm(fields, rows):
        for row in rows:
            row["label"] = "1" if int(row["patient_id"][1:]) in (1, 3, 5, 7, 9, 11) else "0"
        return fields, rows

    rewrite_manifest(data / "manifest.csv", thirty_percent_preterm)
    config = tmp_path / "paper-eval.yaml"
    config.write_text(TINY_CONFIG.replace("data:\n", "data:\n  balance:\n    eval: paper\n"))
    run = tmp_path / "run"
    result = invoke("train", "--data", data, "--config", config, "--out", run)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluation"] == "paper"
    assert any(r["augmented_copy"] == "1" for r in rows)
    for split in ("train", "val", "test"):
        chosen = [r for r in rows if r["split"] == split]
        labels = [r["label"] for r in chosen]
        assert labels.count("1") == labels.count("0")  # each subset brought to 50:50
        assert metrics["splits"][split]["n_images"] == len(chosen)
        originals = [r for r in chosen if r["augmented_copy"] == "0"]
        copies = [r for r in chosen if r["augmented_copy"] == "1"]
        assert all(r["label"] == "1" for r in copies)  # preterm is the minority here
        assert {r["image"] for r in copies} <= {r["image"] for r in originals}
        unbalanced = [r["label"] for r in originals].count("1") < len(originals) / 2
        assert bool(copies) == unbalanced


def test_same_seed_same_run(tmp_path: Path):
    """Two runs with one seed, config and data: identical weights and figures."""
    import keras
    import numpy as np

    from cervixnet.config import load_config
    from cervixnet.runs import train
    from tests.conftest import TINY_RUN_CONFIG

    data = tmp_path / "data"
    write_tiny_dataset(data, n_patients=20)
    config = load_config(
        overrides={**TINY_RUN_CONFIG, "data.path": str(data), "data.augment.crop": 0.1}
    )
    runs = []
    for name in ("first", "second"):
        keras.backend.clear_session()
        runs.append(train(config, tmp_path / name, verbose=0, echo=lambda _: None))
    weights = [keras.models.load_model(r.run_dir / "model.keras").get_weights() for r in runs]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
    first, second = (json.loads((r.run_dir / "metrics.json").read_text()) for r in runs)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    environment = first["reproducibility"]
    assert len(environment["data_fingerprint"]) == 64 and environment["versions"]["keras"]
    assert environment["precision"] == "float32"  # auto, for a model this narrow
    assert environment["jit_compile"] is False  # auto, for a model this narrow
    assert environment["onednn"] in (True, False)  # TensorFlow's answer, recorded
    for name in ("splits.json", "predictions.csv", "history.csv", "operating_point.json"):
        assert (runs[0].run_dir / name).read_text() == (runs[1].run_dir / name).read_text(), name
