"""Semi-supervised training: unannotated scans in no split, pseudo-labels, teacher and student
(``cervixnet.runs.semi_supervised``, ``cervixnet.data.unannotated``)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from cervixnet.cli.main import main
from cervixnet.config import load_config
from cervixnet.data.manifest import read_manifest
from cervixnet.data.splits import Splits, split_patients
from cervixnet.errors import ConfigError, DataError
from cervixnet.runs import resume_training, train
from cervixnet.runs.semi_supervised import choose_reliable, pixel_uncertainty
from cervixnet.training import checkpoint
from cervixnet.training.fit import training_inputs
from tests.conftest import TINY_RUN_CONFIG, rewrite_manifest, write_tiny_dataset

# Patients p12.. have no annotation at all; p00 and p01 keep one annotated scan each.
N_PATIENTS, FIRST_UNANNOTATED = 20, 12
SEMI_CONFIG = {
    **TINY_RUN_CONFIG,
    "model.unet-joint": {"depth": 2, "classifier_units": [8], "classifier_dropout": 0.5},
    "training.semi_supervised.enabled": True,
    "training.epochs": None,  # steps, so that the student takes the teacher's number
    "training.steps": 6,
}


def _unannotate(fields, rows):
    for row in rows:
        patient = int(row["patient_id"][1:])
        if patient >= FIRST_UNANNOTATED or (patient < 2 and row["image"].endswith("_1.png")):
            row["mask"], row["label"] = "", ""
    return fields, rows


def write_partly_annotated(folder: Path) -> Path:
    manifest = write_tiny_dataset(folder, n_patients=N_PATIENTS)
    rewrite_manifest(manifest, _unannotate)
    return folder


def _quiet(_: str) -> None:
    pass


def _weights(path: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in keras.models.load_model(path).weights]


def _table(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "pseudo_labels" / "pseudo_labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_partly_annotated(tmp_path_factory.mktemp("semi") / "data")


@pytest.fixture(scope="module")
def semi_run(data: Path, tmp_path_factory) -> Path:
    config = load_config(overrides={**SEMI_CONFIG, "data.path": str(data)})
    run_dir = tmp_path_factory.mktemp("semi-run") / "run"
    messages: list[str] = []
    train(config, run_dir, verbose=0, echo=messages.append)
    (run_dir.parent / "messages.txt").write_text("\n".join(messages))
    return run_dir


def test_unannotated_rows_are_in_no_split_and_only_those_of_training_patients_are_offered(
    data: Path,
):
    manifest = read_manifest(data)
    splits = split_patients(manifest, (0.6, 0.2, 0.2), seed=0)
    unannotated = {i for i, r in enumerate(manifest.records) if r.unannotated}
    assert len(unannotated) == 2 * (N_PATIENTS - FIRST_UNANNOTATED) + 2
    every_split = {p for name in ("train", "val", "test") for p in splits.patients(name)}
    assert not {f"p{p:02d}" for p in range(FIRST_UNANNOTATED, N_PATIENTS)} & every_split
    indices = splits.indices(manifest)
    assert not unannotated & {i for positions in indices.values() for i in positions}
    offered = splits.unannotated_indices(manifest)
    scored = set(splits.val) | set(splits.test)
    assert set(offered) <= unannotated
    assert all(manifest.records[i].patient_id not in scored for i in offered)
    # The unannotated scan of an annotated patient goes with its patient.
    for patient in ("p00", "p01"):
        scan = next(i for i in unannotated if manifest.records[i].patient_id == patient)
        assert (scan in offered) == (patient in splits.train)
    # The split of the annotated rows is the one they had without the unannotated rows.
    annotated_only = type(manifest)(
        manifest.path, tuple(r for r in manifest.records if not r.unannotated)
    )
    assert split_patients(annotated_only, (0.6, 0.2, 0.2), seed=0) == splits


def test_pseudo_labelled_scans_reach_the_training_batches_and_never_val_or_test(data: Path):
    config = load_config(
        overrides={**TINY_RUN_CONFIG, "data.path": str(data), "data.augment.enabled": False}
    ).replace(  # no copies to balance the labels, each annotated scan once an epoch
        {"data.balance.train_preterm_fraction": None,
         "training.semi_supervised.annotated_share": None}
    )  # fmt: skip
    manifest = read_manifest(data)
    splits = split_patients(manifest, (0.6, 0.2, 0.2), seed=0)
    indices = splits.indices(manifest)
    offered = splits.unannotated_indices(manifest)
    mask = np.full((32, 32), 255, np.uint8)  # a full pseudo-mask, unlike any true one
    records = list(manifest.records)
    for i in offered:
        path = data / f"pseudo-{i}.png"
        cv2.imwrite(str(path), mask)
        records[i] = dataclasses.replace(records[i], mask=path)
    trained = type(manifest)(manifest.path, tuple(records))
    inputs = training_inputs(config, trained, indices, pseudo_labelled=offered)
    assert inputs.train_positions == [*indices["train"], *offered]
    full, label_weights = 0, []
    for _, targets, weights in inputs.train_data.take(inputs.steps_per_epoch):
        is_full = np.asarray(targets["mask"]).reshape(len(targets["mask"]), -1).min(axis=1) > 0
        full += int(is_full.sum())
        assert np.all(np.asarray(weights["mask"])[is_full] == 1)  # the mask loss counts
        label_weights += np.asarray(weights["label"])[is_full].tolist()
    assert full == len(offered)  # each pseudo-labelled scan once per epoch
    assert label_weights == [0.0] * len(offered)  # and never in the label loss
    for _, targets, _ in inputs.val_data:
        masks = np.asarray(targets["mask"]).reshape(len(targets["mask"]), -1)
        assert not np.any(masks.min(axis=1) > 0)
    evaluated = {i for positions, _ in inputs.evaluated.values() for i in positions}
    assert not evaluated & set(offered)


def test_a_semi_supervised_run_trains_a_teacher_and_a_student_on_its_pseudo_labels(
    semi_run: Path, data: Path
):
    teacher = semi_run / "teacher"
    assert (teacher / "metrics.json").is_file() and (semi_run / "metrics.json").is_file()
    manifest = read_manifest(json.loads((semi_run / "metrics.json").read_text())["prepared_data"])
    splits = Splits.load(semi_run / "splits.json")
    assert splits == Splits.load(teacher / "splits.json")
    offered = {str(manifest.records[i].image) for i in splits.unannotated_indices(manifest)}
    table = _table(semi_run)
    assert {row["image"] for row in table} == offered
    kept = [row for row in table if row["kept"] == "1"]
    assert len(kept) == math.ceil(0.5 * len(table))
    assert max(float(r["uncertainty"]) for r in kept) <= min(
        float(r["uncertainty"]) for r in table if r["kept"] == "0"
    )
    for row in kept:
        pseudo = cv2.imread(str(semi_run / "pseudo_labels" / row["mask"]), cv2.IMREAD_UNCHANGED)
        assert pseudo.shape == (32, 32) and set(np.unique(pseudo)) <= {0, 255}
        assert np.count_nonzero(pseudo) == int(row["organ_pixels"]) > 0
    metrics = json.loads((semi_run / "metrics.json").read_text())
    assert metrics["semi_supervised"]["pseudo_labelled"] == len(kept)
    assert (
        metrics["semi_supervised"]["teacher"]
        == json.loads((teacher / "metrics.json").read_text())["splits"]
    )
    # Neither run scored an unannotated scan.
    for run_dir in (semi_run, teacher):
        with (run_dir / "predictions.csv").open(newline="") as handle:
            scored = {row["image"] for row in csv.DictReader(handle)}
        assert not {Path(p).name for p in offered} & {Path(p).name for p in scored}
    # The student took the teacher's optimizer steps, over more scans.
    teacher_config, student_config = (load_config(d / "config.yaml") for d in (teacher, semi_run))
    assert student_config.training.steps == teacher_config.training.steps
    trainings = re.findall(
        r"for (\d+) epochs of (\d+) steps", (semi_run.parent / "messages.txt").read_text()
    )
    (_, teacher_steps), (student_epochs, student_steps) = ((int(e), int(s)) for e, s in trainings)
    assert student_steps > teacher_steps
    assert student_epochs == math.ceil(6 / student_steps) and len(_history(semi_run)) == (
        student_epochs
    )


def _history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _leaves(tree, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested mapping by dotted key (None as NaN)."""
    if isinstance(tree, dict):
        return {
            dotted: value
            for key, sub in tree.items()
            for dotted, value in _leaves(sub, f"{prefix}{key}.").items()
        }
    return {prefix: math.nan if tree is None else tree}


class _KilledError(Exception):
    """Stands for the process dying after a checkpoint was written."""


def test_a_semi_supervised_run_killed_in_each_training_resumes_exactly(
    data: Path, semi_run: Path, tmp_path: Path, monkeypatch
):
    config = load_config(overrides={**SEMI_CONFIG, "data.path": str(data)})
    run_dir = tmp_path / "run"
    save_epoch = checkpoint.RunCheckpoint.on_epoch_end
    deaths = {"teacher": 0, "student": 0}

    def dies_after_the_first_epoch(self, epoch, logs=None):
        save_epoch(self, epoch, logs)
        stage = "teacher" if self.run_dir.name == "teacher" else "student"
        if epoch == 0 and not deaths[stage]:
            deaths[stage] += 1
            raise _KilledError

    monkeypatch.setattr(checkpoint.RunCheckpoint, "on_epoch_end", dies_after_the_first_epoch)
    with pytest.raises(_KilledError):
        train(config, run_dir, verbose=0, echo=_quiet)
    assert (run_dir / "teacher" / "checkpoint").is_dir() and not (run_dir / "config.yaml").exists()
    with pytest.raises(ConfigError, match="--resume"):  # a new run may not overwrite it
        train(config, run_dir, verbose=0, echo=_quiet)
    with pytest.raises(_KilledError):  # the teacher completes, the student dies
        resume_training(run_dir, verbose=0, echo=_quiet)
    assert deaths == {"teacher": 1, "student": 1}
    messages = []
    resume_training(run_dir, verbose=0, echo=messages.append)
    assert any("Teacher: complete" in m for m in messages)
    assert any("resumed after epoch 1" in m for m in messages)
    for stage in (".", "teacher"):
        assert _history(run_dir / stage) == _history(semi_run / stage)
        for ours, theirs in zip(
            _weights(run_dir / stage / "model.keras"),
            _weights(semi_run / stage / "model.keras"),
            strict=True,
        ):
            np.testing.assert_array_equal(ours, theirs)
    assert _table(run_dir) == _table(semi_run)
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, semi_run))
    # The weights are equal bit for bit; the figures computed from them to float32 rounding
    # (the threads of inference may sum in another order).
    ours, theirs = _leaves(ours["splits"]), _leaves(theirs["splits"])
    numbers = {key for key, value in theirs.items() if isinstance(value, float | int)}
    assert {k: ours[k] for k in numbers} == pytest.approx(
        {k: theirs[k] for k in numbers}, rel=1e-6, abs=1e-6, nan_ok=True
    )
    assert {k: v for k, v in ours.items() if k not in numbers} == {
        k: v for k, v in theirs.items() if k not in numbers
    }


def test_without_unannotated_scans_semi_supervised_training_is_refused_before_training(
    tiny_dataset: Path, tmp_path: Path
):
    config = load_config(overrides={**SEMI_CONFIG, "data.path": str(tiny_dataset)})
    with pytest.raises(DataError, match="neither mask nor label"):
        train(config, tmp_path / "run", verbose=0, echo=_quiet)
    assert not (tmp_path / "run").exists()


def _folder_of_scans(folder: Path, colour: bool, count: int = 4) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k in range(count):
        gray = (rng.random((48, 64)) * 200).astype(np.uint8)
        image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if colour else gray
        cv2.imwrite(str(folder / f"scan{k}.png"), image)
    return folder


def test_a_folder_of_unannotated_scans_is_pseudo_labelled_for_the_student(
    tiny_dataset: Path, tmp_path: Path
):
    folder = _folder_of_scans(tmp_path / "bare", colour=True)
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not scans
    before = {p: p.read_bytes() for p in folder.iterdir()}
    config = load_config(
        overrides={**SEMI_CONFIG, "data.path": str(tiny_dataset), "data.unlabelled": str(folder),
                   "training.steps": 2}
    )  # fmt: skip
    train(config, tmp_path / "run", verbose=0, echo=_quiet)
    table = _table(tmp_path / "run")
    assert sorted(row["patient_id"] for row in table) == [
        f"unlabelled/scan{k}.png" for k in range(4)
    ]
    assert {p: p.read_bytes() for p in folder.iterdir()} == before  # only read
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert splits["unannotated"]["n_images"] == 4


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda f: (f / "notes.txt").write_text("not a scan"), r"notes\.txt: .*decoded"),
        (
            lambda f: cv2.imwrite(str(f / "grey.png"), np.zeros((48, 64), np.uint8)),
            r"grey\.png: a grey image \(1 channel\(s\)\), but the labelled scans are colour",
        ),
    ],
    ids=["not-an-image", "other-channel-count"],
)
def test_a_bad_unlabelled_folder_is_refused_naming_the_file(
    tiny_dataset: Path, tmp_path: Path, make, expected: str
):
    folder = _folder_of_scans(tmp_path / "bare", colour=True, count=2)
    make(folder)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text("data:\n  image_size: [32, 32]\nmodel:\n  base_filters: 4\n")
    result = CliRunner().invoke(
        main,
        ["train", "--data", str(tiny_dataset), "--config", str(config_file), "--epochs", "1",
         "--unlabelled", str(folder), "--out", str(tmp_path / "run"),
         "--cache-dir", str(tmp_path / "cache")],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(re.findall(expected, result.output)) == 1, result.output
    assert not (tmp_path / "run").exists()


def test_an_empty_unlabelled_folder_is_refused(tiny_dataset: Path, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    config = load_config(
        overrides={**SEMI_CONFIG, "data.path": str(tiny_dataset),
                   "data.unlabelled": str(tmp_path / "empty")}
    )  # fmt: skip
    with pytest.raises(DataError, match="holds no image"):
        train(config, tmp_path / "run", verbose=0, echo=_quiet)


def test_the_uncertainty_counts_unsure_pixels_per_organ_pixel_and_the_surest_are_kept():
    sure = np.zeros((10, 10), np.float32)
    sure[2:6, 2:6] = 0.99
    unsure = sure.copy()
    unsure[2:6, 2] = 0.6  # four organ pixels only just above 0.5
    assert pixel_uncertainty(sure, 16) == 0.0
    assert pixel_uncertainty(unsure, 16) == pytest.approx(4 / 16)
    assert pixel_uncertainty(np.full((10, 10), 0.2, np.float32), 0) == math.inf
    softmax = np.zeros((4, 4, 3), np.float32)
    softmax[..., 0] = 1.0
    softmax[0, 0] = (0.2, 0.5, 0.3)  # no class above 0.9
    softmax[1, 1] = (0.0, 0.95, 0.05)
    assert pixel_uncertainty(softmax, 2) == pytest.approx(1 / 2)
    kept = choose_reliable(np.array([0.3, 0.1, math.inf, 0.2, 0.1]), 0.5)
    assert kept.tolist() == [False, True, False, True, True]
    assert choose_reliable(np.array([0.3, 0.1]), 1.0).all()


def test_keep_fraction_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="keep_fraction"):
        load_config(overrides={"training.semi_supervised.keep_fraction": 0})


def test_the_student_may_start_from_the_teacher_and_see_the_annotated_scans_more_often(
    semi_run: Path,
):
    from cervixnet.runs.semi_supervised import student_settings
    from cervixnet.training.fit import _with_annotated_share

    weights = semi_run / "pseudo_labels" / "teacher.weights.h5"
    teacher = keras.models.load_model(semi_run / "teacher" / "model.keras")
    copy = keras.models.clone_model(teacher)
    copy.load_weights(weights)
    for ours, theirs in zip(copy.weights, teacher.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    config = load_config(semi_run / "teacher" / "config.yaml")
    semi = config.training.semi_supervised
    assert student_settings(config, semi, weights).model.weights == str(weights)  # the default
    anew = dataclasses.replace(semi, student_start="random")
    assert student_settings(config, anew, weights).model.weights is None
    student = load_config(semi_run / "config.yaml")
    assert student.model.weights == str(weights)
    # 4 annotated scans beside 20 pseudo-labelled: repeated 5 times for a half share.
    assert _with_annotated_share([1, 2, 3, 4], 20, 0.5) == [1, 2, 3, 4] * 5
    assert _with_annotated_share([1, 2, 3, 4], 20, 0.2) == [1, 2, 3, 4] * 2
    assert _with_annotated_share([1, 2, 3, 4], 2, 0.5) == [1, 2, 3, 4]
    assert _with_annotated_share([1, 2, 3, 4], 20, None) == [1, 2, 3, 4]
