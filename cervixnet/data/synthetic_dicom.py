"""The synthetic data set as ultrasound DICOM files with fake identities, to try
``cervixnet data import-dicom`` on (and to test that no identity gets through it).

:func:`generate_dicom` draws the data set of :func:`cervixnet.data.synthetic.generate` and
writes each image as an ultrasound DICOM (Modality US, uncompressed RGB, the burnt-in calipers
kept), with its pixel spacing where scanners put it: a Sequence of Ultrasound Regions with one
2D tissue region covering the image (``PhysicalDeltaX``/``Y`` in cm) and an ECG strip region
below it, which the import must ignore. Every patient gets a fake but realistic identity (name,
birth date, PatientID, AccessionNumber, institution, and Study, Series and SOP Instance UIDs
drawn from the seed), shared by all of their images::

    out/
      dicom/S0001/I00001.dcm   one file per image, a folder per patient (study)
      masks/S0001/I00001.png   its mask, 0/255, as import-dicom --masks finds it
      outcomes.csv             patient_id (the fake DICOM PatientID), label
      truth.csv                source_file (relative to dicom/), cervical_length_mm,
                               canal_length_mm, pixel_spacing_mm
      generator.json           the synthetic generator's spec, model and best AUC
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cervixnet.data import synthetic
from cervixnet.errors import check_output_folder

__all__ = ["fake_identity", "generate_dicom"]

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
_SURNAMES = (
    "Lindqvist", "Okonkwo", "Fernández", "Nakamura", "Kowalczyk", "Haddadin", "Johansson",
    "Delacroix", "Rossellini", "Müllerová", "Abernathy", "Oyelaran",
)  # fmt: skip
_GIVEN_NAMES = (
    "Chiamaka", "Siobhán", "Leonora", "Kristiina", "Marisol", "Yuriko", "Gabrielle",
    "Henrietta", "Zofia-Ewa", "Ingeborg",
)  # fmt: skip


def fake_identity(patient: str, seed: int) -> dict[str, str]:
    """A made-up identity for a synthetic patient (``p001``), the same for the same seed:
    PatientName, PatientBirthDate, PatientID, AccessionNumber, InstitutionName,
    StudyInstanceUID and SeriesInstanceUID, as DICOM text."""
    from pydicom.uid import generate_uid

    number = int(patient.lstrip("p"))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, number]))
    year, month, day = rng.integers(1978, 2004), rng.integers(1, 13), rng.integers(1, 29)
    return {
        "PatientName": f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN_NAMES)}",
        "PatientBirthDate": f"{year:04d}{month:02d}{day:02d}",
        "PatientID": f"MRN{seed % 1000:03d}{number:05d}",
        "AccessionNumber": f"ACC{seed % 1000:03d}{number:05d}{rng.integers(10, 100)}",
        "InstitutionName": f"Maternity Unit {'North' if rng.random() < 0.5 else 'South'} Hospital",
        "StudyInstanceUID": generate_uid(entropy_srcs=["cervixnet", str(seed), patient, "study"]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=["cervixnet", str(seed), patient, "series"]),
    }


def _region(box: tuple[int, int, int, int], kind: tuple[int, int], units, deltas) -> Any:
    from pydicom.dataset import Dataset

    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType = kind
    region.RegionFlags = 0
    (region.RegionLocationMinX0, region.RegionLocationMinY0,
     region.RegionLocationMaxX1, region.RegionLocationMaxY1) = box  # fmt: skip
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX, region.PhysicalDeltaY = deltas
    return region


def _dicom(rgb: np.ndarray, spacing_mm: float, identity: dict[str, str], sop_uid: str, k: int):
    """One ultrasound image as a pydicom dataset: uncompressed RGB, a tissue region covering
    the image and an ECG strip region along its bottom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    height, width = rgb.shape[:2]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the names are not all ASCII
    dataset.SOPClassUID, dataset.SOPInstanceUID = US_IMAGE_STORAGE, sop_uid
    dataset.Modality = "US"
    dataset.Manufacturer = "cervixnet synthetic"
    for keyword, value in identity.items():
        setattr(dataset, keyword, value)
    dataset.StudyDate, dataset.StudyTime = "20240115", "093000"
    dataset.SeriesNumber, dataset.InstanceNumber = 1, k
    dataset.Rows, dataset.Columns = height, width
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 3, "RGB"
    dataset.PlanarConfiguration = 0
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    tissue = _region((0, 0, width - 1, height - 1), (1, 1), (3, 3), (spacing_mm / 10,) * 2)
    ecg = _region((0, height - 24, width - 1, height - 1), (4, 10), (4, 0), (0.004, 0.0))
    dataset.SequenceOfUltrasoundRegions = [tissue, ecg]
    dataset.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return dataset


def generate_dicom(out_dir: str | Path, spec: synthetic.SyntheticSpec | None = None) -> Path:
    """Writes the synthetic data set of ``spec`` (default: ``SyntheticSpec()``) as ultrasound
    DICOM files (the layout in the module docstring) and returns ``out_dir``. The same spec
    gives the same files.

    Raises:
        ConfigError: ``out_dir`` is a file or a non-empty folder; or ``spec`` is invalid.
    """
    import cv2
    from pydicom.uid import generate_uid

    out_dir = check_output_folder(Path(out_dir).expanduser())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        drawn = staging / "drawn"
        spec = synthetic.SyntheticSpec() if spec is None else spec
        manifest = synthetic.generate(drawn, spec)
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        studies = {p: k for k, p in enumerate(dict.fromkeys(r["patient_id"] for r in rows), 1)}
        outcomes, truth = {}, []
        for k, row in enumerate(rows, start=1):
            patient = row["patient_id"]
            identity = fake_identity(patient, spec.seed)
            outcomes[identity["PatientID"]] = row["label"]
            name = f"S{studies[patient]:04d}/I{k:05d}"
            sop_uid = generate_uid(entropy_srcs=["cervixnet", str(spec.seed), name])
            bgr = cv2.imread(str(drawn / row["image"]), cv2.IMREAD_COLOR)
            spacing = float(row["pixel_spacing_mm"])
            dataset = _dicom(bgr[..., ::-1], spacing, identity, sop_uid, k)
            (staging / "dicom" / name).parent.mkdir(parents=True, exist_ok=True)
            dataset.save_as(str(staging / "dicom" / f"{name}.dcm"), enforce_file_format=True)
            (staging / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(drawn / row["mask"], staging / "masks" / f"{name}.png")
            truth.append(
                {
                    "source_file": f"{name}.dcm",
                    "cervical_length_mm": row["cervical_length_mm"],
                    "canal_length_mm": row["canal_length_mm"],
                    "pixel_spacing_mm": row["pixel_spacing_mm"],
                }
            )
        _write_csv(
            staging / "outcomes.csv", [{"patient_id": p, "label": v} for p, v in outcomes.items()]
        )
        _write_csv(staging / "truth.csv", truth)
        shutil.copyfile(
            drawn / synthetic.GENERATOR_INFO_NAME, staging / synthetic.GENERATOR_INFO_NAME
        )
        shutil.rmtree(drawn)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
