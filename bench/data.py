"""Generated DICOM corpora for the benchmarks: deterministic, explicit VR little endian.

Two kinds of image, both 16-bit MONOCHROME2 CT:

- ``small``: 64x64 pixels (about 8 KiB of pixel data an instance),
- ``ct``: 512x512 pixels (512 KiB of pixel data an instance).

Instances are grouped ``per_series`` to a series, ``series_per_study`` series to a study and
``studies_per_patient`` studies to a patient; every UID is derived from (kind, patient, study,
series, instance), so two runs produce byte-identical files. One template dataset is built per
corpus; each instance only changes its identifying attributes and its pixel values.

A third kind, ``studies`` (``generate_studies``), is study-level for C-FIND benchmarks: many
studies of one tiny 16x16 instance each (one big series in the last study), patients with
several studies, surnames, dates, accession numbers, modalities and ages drawn from a seeded
generator; its manifest keeps each study's facts, so a benchmark knows what a query matches.

A folder that already holds a corpus with the same parameters (see ``corpus.json``) is reused.

Run ``python bench/data.py KIND COUNT FOLDER`` to generate one by hand (COUNT is the number of
studies for ``studies``).
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
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
)

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


def _template(rows: int) -> Dataset:
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
    ds.Rows = ds.Columns = rows
    ds.PixelSpacing = ["0.9765625", "0.9765625"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.PixelData = b"\0\0" * rows * rows
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
    ds = _template(layout.rows)
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


def split(corpus: Corpus | StudyCorpus, parts: int, folder: Path) -> list[Path]:
    """``parts`` folders of hard links (copies across file systems) to consecutive runs of the
    corpus' files, in sending order: each sender gets whole series, as separate modalities
    would. ``folder`` is emptied first."""
    return split_files(corpus.files, parts, folder)


def split_files(files: Sequence[Path], parts: int, folder: Path) -> list[Path]:
    """``split`` for any list of files."""
    if folder.exists():
        shutil.rmtree(folder)
    chunk = -(-len(files) // parts)
    folders: list[Path] = []
    for part in range(parts):
        target = folder / f"part{part}"
        target.mkdir(parents=True)
        for path in files[part * chunk : (part + 1) * chunk]:
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copyfile(path, target / path.name)
        folders.append(target)
    return folders


# -- the study-level corpus (C-FIND benchmarks)

STUDIES_KIND = "studies"
STUDIES_CODE = 3  # UID code of the study-level corpus
SMI_SURNAMES = ("SMITH", "SMITHSON")  # what PatientName "SMI*" matches
DECOY_SURNAMES = ("SMYTHE", "SMALL")  # close to them, matched by neither
OTHER_SURNAMES = (
    "ADAMS", "BAKER", "BROWN", "CARTER", "CLARK", "COLLINS", "COOPER", "DAVIES", "EDWARDS",
    "EVANS", "FISHER", "GARCIA", "GREEN", "HALL", "HARRIS", "HILL", "HUGHES", "JACKSON",
    "JAMES", "JOHNSON", "JONES", "KING", "LEWIS", "MARTIN", "MILLER", "MOORE", "MORGAN",
    "MORRIS", "MURPHY", "NELSON", "PARKER", "PHILLIPS", "ROBERTS", "ROBINSON", "SCOTT",
    "TAYLOR", "THOMAS", "THOMPSON", "TURNER", "WALKER", "WARD", "WATSON", "WHITE", "WILLIAMS",
    "WILSON", "WOOD", "WRIGHT", "YOUNG",
)  # fmt: skip
GIVEN_NAMES = ("ANN", "BEN", "CLARA", "DAVID", "EVA", "FRANK", "GRACE", "HENRY", "IRIS", "JOHN")
# (modality, SOP class, share of studies); every SOP class here is a storage class
MODALITIES: tuple[tuple[str, str, float], ...] = (
    ("CT", CTImageStorage, 0.40),
    ("MR", MRImageStorage, 0.25),
    ("CR", ComputedRadiographyImageStorage, 0.20),
    ("US", UltrasoundImageStorage, 0.10),
    ("DX", DigitalXRayImageStorageForPresentation, 0.05),
)
FIRST_DAY, DAYS = date(2017, 1, 1), (date(2024, 12, 31) - date(2017, 1, 1)).days + 1


@dataclass(frozen=True)
class StudyLayout:
    """``studies`` studies of one series each: one small instance each, except the last
    study, whose one series holds ``big_series`` instances (for IMAGE-level queries)."""

    studies: int
    big_series: int = 100
    rows: int = 16
    max_studies_per_patient: int = 6

    def __post_init__(self) -> None:
        if self.studies < 2 or self.big_series < 1 or self.rows < 1:
            raise ValueError("need at least 2 studies and positive sizes")
        if self.max_studies_per_patient < 1:
            raise ValueError("counts must be positive")

    @property
    def count(self) -> int:
        """Instances in all."""
        return self.studies - 1 + self.big_series


@dataclass(frozen=True)
class StudyFacts:
    """What one generated study holds: enough to know what each query should match."""

    study_uid: str
    series_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession: str
    modality: str
    patient_age: str
    instances: int


@dataclass(frozen=True)
class StudyCorpus:
    """A folder of generated Part 10 files, one or more a study, with the studies' facts."""

    layout: StudyLayout
    folder: Path
    files: tuple[Path, ...]  # all in ``dicom_dir``, in sending order (study after study)
    dataset_bytes: int
    studies: tuple[StudyFacts, ...]  # in sending order; the last is the big one

    @property
    def dicom_dir(self) -> Path:
        return self.folder / DICOM_DIR

    @property
    def count(self) -> int:
        return len(self.files)


def _study_facts(layout: StudyLayout) -> list[StudyFacts]:
    """Patients with 1 to ``max_studies_per_patient`` consecutive studies; about 2% of the
    studies are SMITH or SMITHSON, 2% the decoys; study dates spread evenly over 2017-2024
    (about 1% of the studies a month); patient ages 020Y to 089Y."""
    rng = np.random.default_rng(20240101 + STUDIES_CODE)
    shares = np.array([m[2] for m in MODALITIES])
    facts: list[StudyFacts] = []
    patient = 0
    while len(facts) < layout.studies:
        patient += 1
        draw = rng.random()
        if draw < 0.02:
            surname = SMI_SURNAMES[int(draw < 0.012)]
        elif draw < 0.04:
            surname = DECOY_SURNAMES[int(draw < 0.03)]
        else:
            surname = OTHER_SURNAMES[int(rng.integers(len(OTHER_SURNAMES)))]
        name = f"{surname}^{GIVEN_NAMES[int(rng.integers(len(GIVEN_NAMES)))]}"
        for _ in range(int(rng.integers(1, layout.max_studies_per_patient + 1))):
            study = len(facts) + 1
            if study > layout.studies:
                break
            day = FIRST_DAY + timedelta(days=int(rng.integers(DAYS)))
            modality = MODALITIES[int(rng.choice(len(MODALITIES), p=shares))][0]
            big = study == layout.studies
            facts.append(
                StudyFacts(
                    study_uid=uid(STUDIES_CODE, patient, study),
                    series_uid=uid(STUDIES_CODE, patient, study, 1),
                    patient_id=f"FIND{patient:06d}",
                    patient_name=name,
                    study_date=day.strftime("%Y%m%d"),
                    accession=f"ACC{study:08d}",
                    modality="CT" if big else modality,
                    patient_age=f"{int(rng.integers(20, 90)):03d}Y",
                    instances=layout.big_series if big else 1,
                )
            )
    return facts


def _write_studies(
    layout: StudyLayout, facts: Sequence[StudyFacts], folder: Path
) -> tuple[list[Path], int]:
    ds = _template(layout.rows)
    sop_classes = {m[0]: UID(m[1]) for m in MODALITIES}
    base = np.random.default_rng(20240101 + STUDIES_CODE).integers(
        0, 4096, size=(layout.rows, layout.rows), dtype=np.uint16
    )
    files: list[Path] = []
    total = 0
    for number, study in enumerate(facts, start=1):
        ds.PatientID, ds.PatientName = study.patient_id, study.patient_name
        ds.PatientAge = study.patient_age
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, study.series_uid
        ds.FrameOfReferenceUID = study.series_uid + ".0"
        ds.StudyID, ds.AccessionNumber = f"S{number}", study.accession
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
        ds.Modality = study.modality
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_classes[study.modality]
        ds.StudyDescription = f"{study.modality} study"
        ds.SeriesNumber = 1
        for instance in range(1, study.instances + 1):
            ds.SOPInstanceUID = f"{study.series_uid}.{instance}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = instance
            ds.ImagePositionPatient = ["-250.0", "-250.0", f"{instance:.1f}"]
            ds.SliceLocation = f"{instance:.1f}"
            ds.PixelData = ((base + np.uint16(number + instance)) & np.uint16(0x0FFF)).tobytes()
            data, dataset_bytes = _encode(ds)
            path = folder / f"study-{number:06d}-{instance:04d}.dcm"
            path.write_bytes(data)
            files.append(path)
            total += dataset_bytes
    return files, total


def generate_studies(layout: StudyLayout, folder: Path) -> StudyCorpus:
    """Write the study-level corpus into ``folder`` (emptied first), or reuse the one there."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("layout") == {"kind": STUDIES_KIND, **asdict(layout)}:
            kept = tuple(folder / DICOM_DIR / name for name in saved["files"])
            if all(path.is_file() for path in kept):
                facts = tuple(StudyFacts(**study) for study in saved["studies"])
                return StudyCorpus(layout, folder, kept, int(saved["dataset_bytes"]), facts)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / DICOM_DIR).mkdir(parents=True)
    facts = tuple(_study_facts(layout))
    files, total = _write_studies(layout, facts, folder / DICOM_DIR)
    manifest.write_text(
        json.dumps(
            {
                "layout": {"kind": STUDIES_KIND, **asdict(layout)},
                "dataset_bytes": total,
                "files": [p.name for p in files],
                "studies": [asdict(study) for study in facts],
            }
        )
    )
    return StudyCorpus(layout, folder, tuple(files), total, facts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="generate a benchmark corpus")
    parser.add_argument("kind", choices=[*sorted(KINDS), STUDIES_KIND])
    parser.add_argument("count", type=int, help="instances; studies for the studies kind")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-series", type=int, default=Layout.per_series)
    args = parser.parse_args(argv)
    if args.kind == STUDIES_KIND:
        studies = generate_studies(StudyLayout(args.count), args.folder)
        print(
            f"{studies.count} instances, {studies.dataset_bytes / 1e6:.1f} MB of datasets, "
            f"{len(studies.studies)} studies, in {studies.folder}"
        )
        return 0
    corpus = generate(Layout(args.kind, args.count, per_series=args.per_series), args.folder)
    print(
        f"{corpus.count} {args.kind} instances, {corpus.dataset_bytes / 1e6:.1f} MB of datasets, "
        f"{corpus.layout.studies} studies, in {corpus.folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
