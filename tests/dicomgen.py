"""Synthetic DICOM instances for the tests: small, deterministic, every level filled in."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

ROOT = "1.2.826.0.1.3680043.10.1255."  # a UID root for test data only


def uid(*parts: int | str) -> str:
    return ROOT + ".".join(str(p) for p in parts)


def patient_number(patient_id: str) -> int:
    """A UID component derived from a Patient ID (digits only, as UIDs require)."""
    return zlib.crc32(patient_id.encode()) + 1


# The UIDs make_dataset gives a Spec's study, series and instance.
def study_uid(patient: str, study: int) -> str:
    return uid(patient_number(patient), study)


def series_uid(patient: str, study: int, series: int) -> str:
    return uid(patient_number(patient), study, series)


def sop_uid(patient: str, study: int, series: int, instance: int) -> str:
    return uid(patient_number(patient), study, series, instance)


@dataclass(frozen=True)
class Spec:
    patient_id: str
    patient_name: str
    study: int
    series: int
    instance: int
    modality: str = "CT"
    study_date: str = "20240115"
    birth_date: str = "19700101"
    sex: str = "F"
    issuer: str | None = None
    charset: str | None = None
    rows: int = 8


def make_dataset(spec: Spec, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """One image instance with patient, study, series and instance attributes set."""
    sop_class = CTImageStorage if spec.modality == "CT" else MRImageStorage
    ds = Dataset()
    if spec.charset:
        ds.SpecificCharacterSet = spec.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid(spec.patient_id, spec.study, spec.series, spec.instance)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    if spec.issuer is not None:
        ds.IssuerOfPatientID = spec.issuer
    ds.PatientBirthDate = spec.birth_date
    ds.PatientSex = spec.sex
    ds.StudyInstanceUID = study_uid(spec.patient_id, spec.study)
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500.25"
    ds.AccessionNumber = f"ACC{spec.study:04d}"
    ds.StudyID = f"S{spec.study}"
    ds.ReferringPhysicianName = "Doe^Referring"
    ds.StudyDescription = f"Study {spec.study} of {spec.patient_id}"
    ds.SeriesInstanceUID = series_uid(spec.patient_id, spec.study, spec.series)
    ds.Modality = spec.modality
    ds.SeriesNumber = spec.series
    ds.SeriesDescription = f"Series {spec.series}"
    ds.BodyPartExamined = "CHEST"
    ds.InstitutionName = "Test Hospital"
    ds.StationName = "STATION1"
    ds.InstanceNumber = spec.instance
    ds.Rows = ds.Columns = spec.rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = (np.arange(spec.rows * spec.rows, dtype=np.uint16) * (spec.instance + 1)) % 4096
    ds.PixelData = pixels.reshape(spec.rows, spec.rows).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def write(spec: Spec, folder: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    ds = make_dataset(spec, transfer_syntax)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_as(spec: Spec, folder: Path, transfer_syntax: str) -> Path:
    """Like ``write``, in any transfer syntax: compressed ones through pydicom's encoders
    (pylibjpeg-openjpeg for JPEG 2000), big endian with its pixel words swapped."""
    ds = make_dataset(spec)
    syntax = UID(transfer_syntax)
    if syntax.is_compressed:
        ds.compress(syntax)
    else:
        if syntax == ExplicitVRBigEndian:
            ds.PixelData = np.frombuffer(ds.PixelData, "<u2").byteswap().tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
    return write_dataset(ds, folder)


def write_dataset(ds: Dataset, folder: Path) -> Path:
    """Save any dataset, valid or not, named after its file meta's SOP Instance UID."""
    path = folder / f"{ds.file_meta.MediaStorageSOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_part10(path: Path, meta: FileMetaDataset, body: bytes) -> Path:
    """A Part 10 file of the given meta information followed by arbitrary dataset bytes."""
    encoded = DicomBytesIO()
    write_file_meta_info(encoded, meta, enforce_standard=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + encoded.getvalue() + body)
    return path


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its meta information (what C-STORE carries)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with path.open("rb") as fp:
        read_preamble(fp, False)
        _read_file_meta_info(fp)
        return fp.read()


__all__ = [
    "ImplicitVRLittleEndian",
    "Spec",
    "dataset_bytes",
    "generate_uid",
    "make_dataset",
    "write",
    "write_as",
    "write_dataset",
    "write_part10",
]
