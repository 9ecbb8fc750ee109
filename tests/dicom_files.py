"""Ultrasound DICOM files that the tests write with pydicom: each spacing source, each bad case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def region(box=(10, 5, 50, 35), units=(3, 3), delta=(0.01, 0.012), kind=(1, 1)) -> Dataset:
    """One item of the Sequence of Ultrasound Regions (0018,6011): its box ``(x0, y0, x1,
    y1)``, units (3: cm), ``PhysicalDeltaX/Y`` and ``(RegionSpatialFormat, RegionDataType)``
    (1, 1: a 2D tissue image)."""
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType = kind
    (region.RegionLocationMinX0, region.RegionLocationMinY0,
     region.RegionLocationMaxX1, region.RegionLocationMaxY1) = box  # fmt: skip
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX, region.PhysicalDeltaY = delta
    return region


def write_dicom(
    path: Path,
    *,
    patient_id: str | bytes | None = "ID-123456",
    charset: str | None = None,
    study_uid: str | None = None,
    accession: str | None = None,
    regions: list[Dataset] | None = None,
    pixel_spacing: list[float] | None = None,
    bits: int = 8,
    signed: int = 0,
    frames: int = 1,
    frame_time: float | None = None,
    pixels: bool = True,
    array: np.ndarray | None = None,
    rgb: bool = False,
) -> Path:
    """A small uncompressed ultrasound DICOM of 40 rows and 60 columns (the pixels of
    ``array``, or a ramp), grey or RGB, with a fake identity (``Doe^Jane``, ``patient_id``)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    if charset is not None:
        dataset.SpecificCharacterSet = charset
    dataset.Modality = "US"
    dataset.PatientName = "Doe^Jane"
    if patient_id is not None:
        dataset.add_new(0x00100020, "LO", patient_id)
    if study_uid is not None:
        dataset.StudyInstanceUID = study_uid
    if accession is not None:
        dataset.AccessionNumber = accession
    dataset.Rows, dataset.Columns = 40, 60
    dataset.SamplesPerPixel = 3 if rgb else 1
    dataset.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        dataset.PlanarConfiguration = 0
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit, dataset.PixelRepresentation = bits - 1, signed
    if frames > 1:
        dataset.NumberOfFrames = frames
    if frame_time is not None:
        dataset.FrameTime = frame_time
    if regions is not None:
        dataset.SequenceOfUltrasoundRegions = regions
    if pixel_spacing is not None:
        dataset.PixelSpacing = pixel_spacing
    if pixels:
        dtype = {8: np.uint8, 16: np.uint16}[bits]
        if array is None:
            shape = (frames, 40, 60, 3) if rgb else (frames, 40, 60)
            array = np.arange(int(np.prod(shape))) % 200
        dataset.PixelData = np.asarray(array).astype(dtype).tobytes()
    dataset.save_as(str(path), enforce_file_format=True)
    return path
