"""Patient-level train/val/test splits: all images of a patient land in one set.

Splits are grouped by ``patient_id`` and stratified by label with scikit-learn's
``StratifiedGroupKFold``. A fraction ``f`` is realised as one fold of ``round(1 / f)``
folds, first for test on all patients, then for val on the rest, so 60/20/20 is exact in
patients up to rounding and close in images. A split is saved as ``splits.json`` and can be
loaded again to reuse it exactly.

Rows with neither mask nor label (``Record.unannotated``) are in no split: only the patients
with an annotated row are split, and :meth:`Splits.unannotated_indices` gives the unannotated
scans that semi-supervised training may learn from, those of patients outside val and test.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from cervixnet.data.manifest import Manifest
from cervixnet.errors import DataError
from cervixnet.fileio import atomic_write_text

SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Splits:
    """Patient ids per split; ``indices(manifest)`` maps them to record positions."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int | None = None
    fractions: tuple[float, float, float] | None = None

    def patients(self, name: str) -> tuple[str, ...]:
        if name not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {name!r}. Expected one of {SPLIT_NAMES}.")
        return getattr(self, name)

    def indices(self, manifest: Manifest) -> dict[str, list[int]]:
        """Record positions per split, in manifest order; unannotated rows are in none."""
        where = {p: name for name in SPLIT_NAMES for p in self.patients(name)}
        result: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
        for position, record in enumerate(manifest.records):
            if record.unannotated:
                continue
            if record.patient_id not in where:
                raise DataError(
                    f"{manifest.source}, row {record.row}, column 'patient_id': patient "
                    f"'{record.patient_id}' is in no set of the saved split"
                )
            result[where[record.patient_id]].append(position)
        return result

    def unannotated_indices(self, manifest: Manifest) -> list[int]:
        """Positions of the unannotated rows (no mask, no label) whose patient is in neither
        val nor test, in manifest order: the scans semi-supervised training may learn from.
        The unannotated scans of a val or test patient are left out, so that nothing of a
        scored patient is trained on."""
        scored = set(self.val) | set(self.test)
        return [
            position
            for position, record in enumerate(manifest.records)
            if record.unannotated and record.patient_id not in scored
        ]

    def save(self, path: str | Path, manifest: Manifest) -> None:
        """Writes ``splits.json``: patients and image paths per split, with their counts."""
        indices = self.indices(manifest)
        payload = {
            "method": "StratifiedGroupKFold by patient, stratified by label",
            "seed": self.seed,
            "fractions": list(self.fractions) if self.fractions else None,
            "manifest": str(manifest.path),
        }
        for name in SPLIT_NAMES:
            records = [manifest.records[i] for i in indices[name]]
            payload[name] = {
                "patients": list(self.patients(name)),
                "n_images": len(records),
                "n_preterm": sum(r.label == 1 for r in records),
                "images": [_shown_path(r.image, manifest.root) for r in records],
            }
        unannotated = self.unannotated_indices(manifest)
        if unannotated:
            payload["unannotated"] = {
                "n_images": len(unannotated),
                "images": [
                    _shown_path(manifest.records[i].image, manifest.root) for i in unannotated
                ],
            }
        atomic_write_text(path, json.dumps(payload, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Splits:
        """Reads a ``splits.json`` written by :meth:`save`."""
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            parts = {name: tuple(str(p) for p in payload[name]["patients"]) for name in SPLIT_NAMES}
        except FileNotFoundError:
            raise DataError(f"{path}: splits file not found") from None
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path}: not a cervixnet splits.json ({error!r})") from None
        owners: dict[str, str] = {}
        overlap = sorted(
            p for name in SPLIT_NAMES for p in parts[name] if owners.setdefault(p, name) != name
        )
        if overlap:
            raise DataError(f"{path}: patients in more than one set: {overlap[:5]}")
        fractions = payload.get("fractions")
        return cls(
            **parts,
            seed=payload.get("seed"),
            fractions=tuple(fractions) if fractions else None,
        )


def split_patients(
    manifest: Manifest, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> Splits:
    """Splits a manifest's patients into train/val/test, grouped and stratified by label.

    Args:
        manifest: the parsed data set.
        fractions: train, val and test fractions summing to 1 (test or val may be 0).
        seed: shuffles patients before the folds are formed.

    Raises:
        DataError: too few patients for the requested folds.
    """
    train_fraction, val_fraction, test_fraction = (float(f) for f in fractions)
    if abs(train_fraction + val_fraction + test_fraction - 1.0) > 1e-6 or train_fraction <= 0:
        raise ValueError(f"fractions must sum to 1 with train > 0. Received: fractions={fractions}")
    patients, strata = _patients_and_strata(manifest)
    everyone = np.arange(len(patients))
    test_idx = _one_fold(manifest, everyone, patients, strata, test_fraction, seed)
    rest = np.setdiff1d(everyone, test_idx)
    val_share = val_fraction / (train_fraction + val_fraction)
    val_idx = rest[
        _one_fold(manifest, np.arange(len(rest)), patients[rest], strata[rest], val_share, seed)
    ]
    train_idx = np.setdiff1d(rest, val_idx)
    ordered = {
        name: tuple(dict.fromkeys(patients[np.sort(idx)].tolist()))
        for name, idx in zip(SPLIT_NAMES, (train_idx, val_idx, test_idx), strict=True)
    }
    return Splits(**ordered, seed=seed, fractions=(train_fraction, val_fraction, test_fraction))


def cross_validation_splits(
    manifest: Manifest, folds: int, val_fraction: float = 0.25, seed: int = 0
) -> list[Splits]:
    """K-fold cross-validation by patient: each fold is the test set of one :class:`Splits`.

    Patients are divided into ``folds`` groups with scikit-learn's ``StratifiedGroupKFold``
    (grouped by patient, stratified by label); for fold ``k`` the ``k``-th group is the test
    set and ``val_fraction`` of the remaining patients, chosen the same way, the validation
    set. Every patient is in exactly one test set.

    Args:
        manifest: the parsed data set.
        folds: number of folds, at least 2.
        val_fraction: share of the non-test patients used for validation (0 for none).
        seed: shuffles patients before the folds are formed.

    Raises:
        DataError: fewer patients than folds.
    """
    if folds < 2:
        raise ValueError(f"`folds` must be at least 2. Received: folds={folds}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"`val_fraction` must be in [0, 1). Received: {val_fraction}")
    patients, strata = _patients_and_strata(manifest)
    if len(set(patients.tolist())) < folds:
        raise DataError(
            f"{manifest.source}: {len(set(patients.tolist()))} patients are too few for "
            f"{folds}-fold cross-validation"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    result = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            test_folds = [test for _, test in splitter.split(patients, strata, groups=patients)]
        except ValueError as error:  # e.g. every class smaller than the number of folds
            raise DataError(
                f"{manifest.source}: cannot form {folds} folds stratified by label ({error})"
            ) from None
    for test_idx in test_folds:
        rest = np.setdiff1d(np.arange(len(patients)), test_idx)
        val_idx = rest[
            _one_fold(
                manifest, np.arange(len(rest)), patients[rest], strata[rest], val_fraction, seed
            )
        ]
        train_idx = np.setdiff1d(rest, val_idx)
        ordered = {
            name: tuple(dict.fromkeys(patients[np.sort(idx)].tolist()))
            for name, idx in zip(SPLIT_NAMES, (train_idx, val_idx, test_idx), strict=True)
        }
        test_share = len(ordered["test"]) / len(set(patients.tolist()))
        rest_share = 1 - test_share
        fractions = (rest_share * (1 - val_fraction), rest_share * val_fraction, test_share)
        result.append(Splits(**ordered, seed=seed, fractions=fractions))
    return result


def _patients_and_strata(manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The patient and stratum of each annotated row (unannotated rows are in no split).
    Unknown labels form their own stratum, so that they spread over the sets too."""
    annotated = [r for r in manifest.records if not r.unannotated]
    if not annotated:
        raise DataError(
            f"{manifest.source}: no row has a mask or a label, so there is nothing to split"
        )
    patients = np.array([r.patient_id for r in annotated])
    strata = np.array([-1 if r.label is None else r.label for r in annotated])
    return patients, strata


def _shown_path(path: Path, root: Path) -> str:
    """``path`` relative to the data folder ``root``, or whole when it lies elsewhere."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _one_fold(manifest, positions, patients, strata, fraction, seed) -> np.ndarray:
    """Positions (into ``positions``) of one stratified group fold of about ``fraction``."""
    if fraction <= 0:
        return np.array([], dtype=int)
    n_folds = max(2, round(1.0 / fraction))
    n_patients = len(set(patients.tolist()))
    if n_patients < n_folds:
        raise DataError(
            f"{manifest.source}: {n_patients} patients are too few for a {fraction:.0%} split "
            f"({n_folds} patient groups needed)"
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # With ~10 % preterm, a class smaller than the fold count is normal, not a problem.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            _, fold = next(splitter.split(positions, strata, groups=patients))
        except ValueError as error:  # e.g. every class smaller than the number of folds
            raise DataError(
                f"{manifest.source}: cannot form a {fraction:.0%} split stratified by label "
                f"from {n_patients} patients ({error})"
            ) from None
    return fold
