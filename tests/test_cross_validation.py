"""Tests of K-fold cross-validation: patient-level folds and the summary across folds."""

import math
from pathlib import Path

import pytest

from cervixnet.data.manifest import read_manifest
from cervixnet.data.splits import SPLIT_NAMES, cross_validation_splits
from cervixnet.errors import DataError
from cervixnet.runs.cross_validation import format_summary, summarize_folds
from tests.conftest import write_tiny_dataset


@pytest.fixture
def manifest(tmp_path: Path):
    return read_manifest(write_tiny_dataset(tmp_path / "d", n_patients=20, images_per_patient=2))


def test_every_patient_is_tested_once_and_never_in_two_sets(manifest):
    folds = cross_validation_splits(manifest, 5, val_fraction=0.25, seed=0)
    assert len(folds) == 5
    everyone = {r.patient_id for r in manifest.records}
    tested = [p for fold in folds for p in fold.test]
    assert sorted(tested) == sorted(everyone)  # each patient in exactly one test set
    for fold in folds:
        sets = [set(fold.patients(name)) for name in SPLIT_NAMES]
        assert set().union(*sets) == everyone
        assert sum(len(s) for s in sets) == len(everyone)  # no patient in two sets
        assert fold.val  # a validation set for early stopping
        indices = fold.indices(manifest)
        for name in SPLIT_NAMES:  # images follow their patient
            assert {manifest.records[i].patient_id for i in indices[name]} == set(
                fold.patients(name)
            )
        # Stratified: both classes in every test fold.
        assert {manifest.records[i].label for i in indices["test"]} == {0, 1}


def test_folds_depend_on_the_seed(manifest):
    a = cross_validation_splits(manifest, 4, seed=0)
    b = cross_validation_splits(manifest, 4, seed=0)
    c = cross_validation_splits(manifest, 4, seed=1)
    assert [f.test for f in a] == [f.test for f in b]
    assert [f.test for f in a] != [f.test for f in c]


def test_too_many_folds_is_a_data_error(manifest):
    with pytest.raises(DataError, match="too few"):
        cross_validation_splits(manifest, 50)


def _fold(iou, auc):
    test = {"n_images": 10, "segmentation": {"iou_mean": iou, "dice_mean": iou + 0.05}}
    if auc is not None:
        test["classification"] = {"auc": auc, "recall": 0.5}
    return {"splits": {"test": test}}


def test_summary_mean_and_sample_std():
    summary = summarize_folds([_fold(0.8, 0.7), _fold(0.9, 0.9), _fold(0.85, float("nan"))])
    assert summary["mean"]["iou"] == pytest.approx(0.85)
    assert summary["std"]["iou"] == pytest.approx(0.05)  # sample std (ddof=1)
    assert summary["mean"]["auc"] == pytest.approx(0.8)  # the NaN fold is left out
    assert summary["std"]["auc"] == pytest.approx(math.sqrt(0.02))
    assert "auc" not in summary["per_fold"][2]
    table = format_summary(summary)
    assert "0.850 ± 0.050" in table and table.count("\n") == 5


def test_summary_of_segmentation_only_runs_has_no_label_figures():
    summary = summarize_folds([_fold(0.8, None), _fold(0.7, None)])
    assert set(summary["mean"]) == {"iou", "dice"}


def test_summary_of_several_classes_has_each_classes_dice():
    folds = []
    for dice in ((0.8, 0.6), (0.9, 0.7)):
        fold = _fold(0.8, None)
        segmentation = fold["splits"]["test"]["segmentation"]
        segmentation["classes"] = {
            "anterior_lip": {"dice_mean": dice[0]},
            "posterior_lip": {"dice_mean": dice[1]},
        }
        segmentation["class_dice_mean"] = sum(dice) / 2
        folds.append(fold)
    summary = summarize_folds(folds)
    assert list(summary["mean"]) == ["iou", "dice", "dice_anterior_lip", "dice_posterior_lip",
                                     "class_dice"]  # fmt: skip
    assert summary["mean"]["dice_posterior_lip"] == pytest.approx(0.65)
    assert summary["mean"]["class_dice"] == pytest.approx(0.75)
    assert "dice_anterior_lip" in format_summary(summary)
