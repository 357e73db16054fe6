"""DCMTK's storescu stores a multi-patient set: every level indexed with the values sent."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage

from dicomgen import Spec, dataset_bytes, write
from helpers import (
    association_lines,
    blob_files,
    blob_path,
    index_counts,
    index_rows,
    tmp_files,
    wait_for,
)
from serving import RunningServer

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
LATIN1_NAME = "Müller^Jürgen"


def specs() -> list[Spec]:
    """3 patients x 2 studies x 2 series (CT, MR) x 3 instances, one of them named in
    Latin-1, plus a patient whose ID has an issuer (1 study, 1 series, 2 instances)."""
    patients = [
        ("DCM1", "Smith^John", None),
        ("DCM2", "Jones^Ann", None),
        ("DCM3", LATIN1_NAME, "ISO_IR 100"),
    ]
    out = [
        Spec(
            pid,
            name,
            study,
            series,
            instance,
            modality="CT" if series == 1 else "MR",
            study_date=f"2024{study:02d}1{p}",
            sex="MF"[p % 2],
            charset=charset,
        )
        for p, (pid, name, charset) in enumerate(patients)
        for study in (1, 2)
        for series in (1, 2)
        for instance in (1, 2, 3)
    ]
    out += [Spec("DCM4", "Issuer^Has", 1, 1, i, issuer="HOSP_A") for i in (1, 2)]
    return out


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("storescu")
    return [write(spec, folder) for spec in specs()]


def storescu(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", "-aec", "PYPACS", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        env=NODELAY,
        timeout=120,
    )


def by(rows: list[dict[str, object]], column: str) -> dict[object, dict[str, object]]:
    keyed = {row[column]: row for row in rows}
    assert len(keyed) == len(rows), f"{column} is not unique"
    return keyed


def test_storescu_set_is_indexed_with_the_values_sent(
    server: RunningServer, sent: list[Path]
) -> None:
    result = storescu(server.dicom_port, sent)
    assert result.returncode == 0, result.stderr

    url = server.database_url
    datasets = [dcmread(path) for path in sent]
    assert index_counts(url) == {"patient": 4, "study": 7, "series": 13, "instance": 38}

    patients = by(index_rows(url, "patient"), "patient_id")
    studies = by(index_rows(url, "study"), "study_instance_uid")
    series = by(index_rows(url, "series"), "series_instance_uid")
    instances = by(index_rows(url, "instance"), "sop_instance_uid")
    for ds in datasets:
        patient = patients[ds.PatientID]
        assert patient["patient_name"] == str(ds.PatientName)
        assert patient["issuer_of_patient_id"] == ds.get("IssuerOfPatientID", "")
        assert patient["patient_birth_date"] == ds.PatientBirthDate
        assert patient["patient_sex"] == ds.PatientSex
        study = studies[ds.StudyInstanceUID]
        assert study["patient_pk"] == patient["pk"]
        assert study["study_date"] == ds.StudyDate
        assert study["study_time"] == ds.StudyTime
        assert study["accession_number"] == ds.AccessionNumber
        assert study["study_id"] == ds.StudyID
        assert study["referring_physician_name"] == str(ds.ReferringPhysicianName)
        assert study["study_description"] == ds.StudyDescription
        one = series[ds.SeriesInstanceUID]
        assert one["study_pk"] == study["pk"]
        assert one["modality"] == ds.Modality
        assert one["series_number"] == str(ds.SeriesNumber)
        assert one["series_description"] == ds.SeriesDescription
        assert one["body_part_examined"] == ds.BodyPartExamined
        assert one["institution_name"] == ds.InstitutionName
        assert one["station_name"] == ds.StationName
        instance = instances[ds.SOPInstanceUID]
        assert instance["series_pk"] == one["pk"]
        assert instance["instance_number"] == str(ds.InstanceNumber)
        assert instance["sop_class_uid"] == ds.SOPClassUID
        assert instance["transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID

    assert patients["DCM3"]["patient_name"] == LATIN1_NAME
    assert patients["DCM4"]["issuer_of_patient_id"] == "HOSP_A"
    assert patients["DCM1"]["issuer_of_patient_id"] == ""

    # Derived attributes: exact counts, modalities and SOP classes.
    for pid in ("DCM1", "DCM2", "DCM3"):
        p = patients[pid]
        assert (p["num_studies"], p["num_series"], p["num_instances"]) == (2, 4, 12)
    assert (
        patients["DCM4"]["num_studies"],
        patients["DCM4"]["num_series"],
        patients["DCM4"]["num_instances"],
    ) == (1, 1, 2)
    per_study = Counter(ds.StudyInstanceUID for ds in datasets)
    for study_uid, study in studies.items():
        assert study["num_instances"] == per_study[study_uid]
        if study["patient_pk"] == patients["DCM4"]["pk"]:
            assert (study["num_series"], study["modalities_in_study"]) == (1, "CT")
            assert study["sop_classes_in_study"] == CTImageStorage
        else:
            assert (study["num_series"], study["modalities_in_study"]) == (2, "CT\\MR")
            assert study["sop_classes_in_study"] == f"{CTImageStorage}\\{MRImageStorage}"
    per_series = Counter(ds.SeriesInstanceUID for ds in datasets)
    assert {uid: s["num_instances"] for uid, s in series.items()} == per_series

    # Bytes in are bytes out: each blob holds the dataset exactly as the file had it.
    for path, ds in zip(sent, datasets, strict=True):
        blob = blob_path(server.data, str(instances[ds.SOPInstanceUID]["blob_key"]))
        assert instances[ds.SOPInstanceUID]["blob_size"] == blob.stat().st_size
        assert (
            hashlib.sha256(dataset_bytes(blob)).hexdigest()
            == hashlib.sha256(dataset_bytes(path)).hexdigest()
        )
    assert len(blob_files(server.data)) == 38
    assert tmp_files(server.data) == []

    line = wait_for(
        lambda: association_lines(server.log(), "STORESCU"), what="the association log line"
    )
    assert len(line) == 1
    assert ": 38 stored; released after " in line[0]
    assert " to PYPACS: " in line[0]


def test_storescu_sending_again_changes_nothing(server: RunningServer, sent: list[Path]) -> None:
    first = storescu(server.dicom_port, sent)
    assert first.returncode == 0, first.stderr
    url = server.database_url
    before = {table: index_rows(url, table) for table in ("patient", "study", "series", "instance")}
    blobs_before = blob_files(server.data)

    again = storescu(server.dicom_port, sent)

    assert again.returncode == 0, again.stderr
    assert {table: index_rows(url, table) for table in before} == before
    assert blob_files(server.data) == blobs_before
    assert tmp_files(server.data) == []
    lines = wait_for(
        lambda: [x for x in association_lines(server.log(), "STORESCU") if "already" in x],
        what="the second association's log line",
    )
    assert ": 38 already present; released after " in lines[0]
