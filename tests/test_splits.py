import json
from pathlib import Path

import pytest

from cervixnet.data.manifest import read_manifest
from cervixnet.data.splits import SPLIT_NAMES, Splits, split_patients
from cervixnet.errors import DataError
from tests.conftest import write_tiny_dataset


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits")
    write_tiny_dataset(folder, n_patients=40, images_per_patient=3)
    return read_manifest(folder)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_no_patient_in_two_sets_and_every_image_in_one(manifest, seed):
    splits = split_patients(manifest, (0.6, 0.2, 0.2), seed=seed)
    sets = [set(splits.patients(name)) for name in SPLIT_NAMES]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    indices = splits.indices(manifest)
    assert sorted(i for name in SPLIT_NAMES for i in indices[name]) == list(range(120))
    for name in SPLIT_NAMES:
        patients = {manifest.records[i].patient_id for i in indices[name]}
        assert patients == set(splits.patients(name))


def test_fractions_and_stratification(manifest):
    indices = split_patients(manifest, (0.6, 0.2, 0.2), seed=0).indices(manifest)
    assert [len(indices[n]) for n in SPLIT_NAMES] == [72, 24, 24]
    for name in SPLIT_NAMES:
        labels = [manifest.records[i].label for i in indices[name]]
        assert sum(labels) == len(labels) // 2  # the tiny set is 50 % preterm by patient


def test_same_seed_same_split_other_seed_other_split(manifest):
    assert split_patients(manifest, seed=3) == split_patients(manifest, seed=3)
    assert split_patients(manifest, seed=3).test != split_patients(manifest, seed=4).test


def test_save_and_load_round_trip(manifest, tmp_path: Path):
    splits = split_patients(manifest, seed=0)
    splits.save(tmp_path / "splits.json", manifest)
    payload = json.loads((tmp_path / "splits.json").read_text())
    assert payload["test"]["n_images"] == len(splits.indices(manifest)["test"])
    assert payload["train"]["images"][0].startswith("images/")
    assert Splits.load(tmp_path / "splits.json") == splits


def test_load_refuses_overlap_and_unknown_patients(manifest, tmp_path: Path):
    splits = split_patients(manifest, seed=0)
    splits.save(tmp_path / "splits.json", manifest)
    payload = json.loads((tmp_path / "splits.json").read_text())
    payload["val"]["patients"].append(payload["train"]["patients"][0])
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    with pytest.raises(DataError, match="patients in more than one set"):
        Splits.load(tmp_path / "bad.json")
    partial = Splits(train=splits.train[1:], val=splits.val, test=splits.test)
    with pytest.raises(DataError, match="is in no set of the saved split"):
        partial.indices(manifest)


def test_too_few_patients(tmp_path: Path):
    write_tiny_dataset(tmp_path, n_patients=3, images_per_patient=1)
    with pytest.raises(DataError, match="too few"):
        split_patients(read_manifest(tmp_path), (0.6, 0.2, 0.2))
