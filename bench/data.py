"""Generated DICOM corpora for the benchmarks: deterministic, explicit VR little endian.

Two kinds of image, both 16-bit MONOCHROME2 CT:

- ``small``: 64x64 pixels (about 8 KiB of pixel data an instance),
- ``ct``: 512x512 pixels (512 KiB of pixel data an instance).

Instances are grouped ``per_series`` to a series, ``series_per_study`` series to a study and
``studies_per_patient`` studies to a patient; every UID is derived from (kind, patient, study,
series, instance), so two runs produce byte-identical files. One template dataset is built per
corpus; each instance only changes its identifying attributes and its pixel values.

A folder that already holds a corpus with the same parameters (see ``corpus.json``) is reused.

Run ``python bench/data.py KIND COUNT FOLDER`` to generate one by hand.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

UID_ROOT = "1.2.826.0.1.3680043.10.1255.9."  # the project's test-data root, branch 9: benchmarks
KINDS: dict[str, tuple[int, int]] = {"small": (1, 64), "ct": (2, 512)}  # kind: (UID code, rows)
MANIFEST = "corpus.json"
DICOM_DIR = "dicom"
DCMQRSCP_MAX_STUDIES = 500  # dcmqrscp deletes the oldest study past this


@dataclass(frozen=True)
class Layout:
    """How many instances, and how they are grouped."""

    kind: str
    count: int
    per_series: int = 100
    series_per_study: int = 2
    studies_per_patient: int = 2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.count < 1 or self.per_series < 1 or self.series_per_study < 1:
            raise ValueError("counts must be positive")
        if self.studies_per_patient < 1:
            raise ValueError("counts must be positive")

    @property
    def rows(self) -> int:
        return KINDS[self.kind][1]

    @property
    def series(self) -> int:
        return -(-self.count // self.per_series)

    @property
    def studies(self) -> int:
        return -(-self.series // self.series_per_study)

    @property
    def patients(self) -> int:
        return -(-self.studies // self.studies_per_patient)


@dataclass(frozen=True)
class Corpus:
    """A folder of generated Part 10 files."""

    layout: Layout
    folder: Path
    files: tuple[Path, ...]  # all in ``dicom_dir``, in sending order
    dataset_bytes: int  # bytes after the file meta information: what C-STORE carries

    @property
    def dicom_dir(self) -> Path:
        """The folder holding the DICOM files and nothing else (``storescu +sd`` it)."""
        return self.folder / DICOM_DIR

    @property
    def count(self) -> int:
        return len(self.files)


def uid(*parts: int) -> str:
    return UID_ROOT + ".".join(str(p) for p in parts)


def _template(layout: Layout) -> Dataset:
    """Every attribute of an instance, with placeholders for the identifying ones."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(0)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "pypacs bench"
    ds.InstitutionName = "Bench Hospital"
    ds.ReferringPhysicianName = "Doe^Referring"
    ds.StationName = "BENCHCT1"
    ds.StudyDescription = "Bench study"
    ds.SeriesDescription = "Bench series"
    ds.ManufacturerModelName = "Synthetic"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid(0)
    ds.SeriesInstanceUID = uid(0)
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["-250.0", "-250.0", "0.0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid(0)
    ds.SliceLocation = "0.0"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = layout.rows
    ds.PixelSpacing = ["0.9765625", "0.9765625"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = b"\0\0" * layout.rows * layout.rows
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def _positions(layout: Layout) -> Iterator[tuple[int, int, int, int]]:
    """(patient, study, series, instance) numbers, 1-based, in sending order."""
    for index in range(layout.count):
        series = index // layout.per_series
        study = series // layout.series_per_study
        patient = study // layout.studies_per_patient
        yield patient + 1, study + 1, series + 1, index % layout.per_series + 1


def _encode(ds: Dataset) -> tuple[bytes, int]:
    """The Part 10 bytes of ``ds`` and the size of its dataset after the meta information."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    # 128-byte preamble, "DICM", then (0002,0000) UL: tag, VR, length (8 bytes), value (4).
    (meta_length,) = struct.unpack_from("<I", data, 140)
    return data, len(data) - 144 - meta_length


def _write_all(layout: Layout, folder: Path) -> tuple[list[Path], int]:
    code = KINDS[layout.kind][0]
    ds = _template(layout)
    base = np.random.default_rng(20240101 + code).integers(
        0, 4096, size=(layout.rows, layout.rows), dtype=np.uint16
    )
    files: list[Path] = []
    total = 0
    last_series = 0
    for patient, study, series, instance in _positions(layout):
        if series != last_series:  # set series, study and patient attributes once per series
            last_series = series
            ds.PatientID = f"BENCH-{layout.kind.upper()}-{patient:04d}"
            ds.PatientName = f"BENCH^{layout.kind.upper()}{patient:04d}"
            ds.StudyInstanceUID = uid(code, patient, study)
            ds.StudyID = f"S{study}"
            ds.AccessionNumber = f"A{code}{study:07d}"
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = (
                f"2024{1 + study % 12:02d}{1 + study % 28:02d}"
            )
            ds.SeriesInstanceUID = uid(code, patient, study, series)
            ds.FrameOfReferenceUID = uid(code, patient, study, series, 0)
            ds.SeriesNumber = series
        ds.SOPInstanceUID = uid(code, patient, study, series, instance)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = ["-250.0", "-250.0", f"{instance:.1f}"]
        ds.SliceLocation = f"{instance:.1f}"
        ds.PixelData = ((base + np.uint16(instance * 7)) & np.uint16(0x0FFF)).tobytes()
        data, dataset_bytes = _encode(ds)
        path = folder / f"{layout.kind}-{series:04d}-{instance:04d}.dcm"
        path.write_bytes(data)
        files.append(path)
        total += dataset_bytes
    return files, total


def generate(layout: Layout, folder: Path) -> Corpus:
    """Write the corpus into ``folder`` (emptied first), or reuse the one already there:
    the files under ``folder/dicom``, the manifest in ``folder/corpus.json``."""
    if layout.studies > DCMQRSCP_MAX_STUDIES:
        print(
            f"warning: {layout.studies} studies; dcmqrscp keeps only {DCMQRSCP_MAX_STUDIES}",
            file=sys.stderr,
        )
    manifest = folder / MANIFEST
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("layout") == asdict(layout):
            kept = tuple(folder / DICOM_DIR / name for name in saved["files"])
            if all(path.is_file() for path in kept):
                return Corpus(layout, folder, kept, int(saved["dataset_bytes"]))
    if folder.exists():
        shutil.rmtree(folder)
    (folder / DICOM_DIR).mkdir(parents=True)
    files, total = _write_all(layout, folder / DICOM_DIR)
    manifest.write_text(
        json.dumps(
            {"layout": asdict(layout), "dataset_bytes": total, "files": [p.name for p in files]}
        )
    )
    return Corpus(layout, folder, tuple(files), total)


def split(corpus: Corpus, parts: int, folder: Path) -> list[Path]:
    """``parts`` folders of hard links (copies across file systems) to consecutive runs of the
    corpus' files, in sending order: each sender gets whole series, as separate modalities
    would. ``folder`` is emptied first."""
    if folder.exists():
        shutil.rmtree(folder)
    chunk = -(-corpus.count // parts)
    folders: list[Path] = []
    for part in range(parts):
        target = folder / f"part{part}"
        target.mkdir(parents=True)
        for path in corpus.files[part * chunk : (part + 1) * chunk]:
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copyfile(path, target / path.name)
        folders.append(target)
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="generate a benchmark corpus")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("count", type=int)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-series", type=int, default=Layout.per_series)
    args = parser.parse_args(argv)
    corpus = generate(Layout(args.kind, args.count, per_series=args.per_series), args.folder)
    print(
        f"{corpus.count} {args.kind} instances, {corpus.dataset_bytes / 1e6:.1f} MB of datasets, "
        f"{corpus.layout.studies} studies, in {corpus.folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
