"""C-FIND responses over real sockets: one per matching entity, derived counts, every
requested key returned (zero-length when the entity has no value, PS3.4 C.4.1.1.3.2), and
character sets declared and decoded (PS3.5 6.1.2.3)."""

from __future__ import annotations

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from findfixtures import (
    ALL_PATIENTS,
    ALL_STUDIES,
    INSTANCE_UID,
    PATIENT,
    PATIENT_OF,
    PATIENT_ROOT,
    PATIENT_STUDY_ONLY,
    PATIENTS,
    RELATIONAL,
    SERIES_UID,
    STUDY,
    STUDY_UID,
    SUCCESS,
    by_label,
    find,
    instances,
    modalities,
    patient_counts,
    patients,
    series,
    studies,
    study_counts,
)
from serving import RunningServer

# Returned besides the requested keys (PS3.4 C.4.1.1.3.2, C.4.1.1.3.1).
ALWAYS_ALLOWED = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"}


def plain(elem: DataElement) -> object:
    """A returned value in the form the expectations use: "" when zero-length, a list for
    several values, int for IS, str otherwise; sequences as lists of datasets."""
    if elem.VR == "SQ":
        return list(elem.value)
    if elem.is_empty:
        return ""
    if isinstance(elem.value, MultiValue):
        return [str(v) for v in elem.value]
    if elem.VR == "IS":
        return int(elem.value)
    return str(elem.value)


def check_keys(response: Dataset, expected: dict[str, object]) -> None:
    """Every requested key is present with exactly the expected value; nothing else came."""
    present = {elem.keyword for elem in response}
    missing = set(expected) - present
    assert not missing, f"requested keys missing: {sorted(missing)}"
    extra = present - set(expected) - ALWAYS_ALLOWED
    assert not extra, f"keys returned but not requested: {sorted(extra)}"
    got = {keyword: plain(response[keyword]) for keyword in expected}
    for keyword, value in got.items():
        if isinstance(value, list) and value and isinstance(value[0], Dataset):
            got[keyword] = [(i.CodeValue, i.CodingSchemeDesignator) for i in value]
    assert got == expected


# -- one response per entity, with derived counts ------------------------------------------


@pytest.mark.parametrize("model", [PATIENT_ROOT, PATIENT_STUDY_ONLY], ids=["PR", "PSO"])
def test_patient_level_one_response_per_patient(find_pacs: RunningServer, model: str) -> None:
    keys = {
        "PatientID": "",
        "PatientName": "",
        "NumberOfPatientRelatedStudies": "",
        "NumberOfPatientRelatedSeries": "",
        "NumberOfPatientRelatedInstances": "",
    }
    answer = find(find_pacs.dicom_port, keys, level="PATIENT", model=model)
    assert answer.status == SUCCESS
    assert patients(answer.responses) == sorted(ALL_PATIENTS)
    got = {
        str(r.PatientID): (
            str(r.PatientName),
            int(r.NumberOfPatientRelatedStudies),
            int(r.NumberOfPatientRelatedSeries),
            int(r.NumberOfPatientRelatedInstances),
        )
        for r in answer.responses
    }
    assert got == {p.patient_id: (p.name, *patient_counts(p)) for p in PATIENTS}


def study_summary(r: Dataset) -> tuple[list[str], int, int]:
    values = r.ModalitiesInStudy
    listed = [str(v) for v in values] if isinstance(values, MultiValue) else [str(values)]
    return (
        sorted(listed),
        int(r.NumberOfStudyRelatedSeries),
        int(r.NumberOfStudyRelatedInstances),
    )


STUDY_COUNT_KEYS = {
    "StudyInstanceUID": "",
    "ModalitiesInStudy": "",
    "NumberOfStudyRelatedSeries": "",
    "NumberOfStudyRelatedInstances": "",
}


def test_study_level_one_response_per_study(find_pacs: RunningServer) -> None:
    answer = find(find_pacs.dicom_port, STUDY_COUNT_KEYS)
    assert answer.status == SUCCESS
    assert studies(answer.responses) == sorted(ALL_STUDIES)
    got = {label: study_summary(r) for label, r in by_label(answer.responses).items()}
    assert got == {label: (modalities(label), *study_counts(label)) for label in ALL_STUDIES}


@pytest.mark.parametrize("model", [PATIENT_ROOT, PATIENT_STUDY_ONLY], ids=["PR", "PSO"])
def test_study_level_under_patient_counts(find_pacs: RunningServer, model: str) -> None:
    keys = {"PatientID": "PAT-JOHN", **STUDY_COUNT_KEYS}
    answer = find(find_pacs.dicom_port, keys, model=model)
    assert answer.status == SUCCESS
    got = {label: study_summary(r) for label, r in by_label(answer.responses).items()}
    assert got == {
        "john1": (["CT", "MR", "SR"], 3, 6),
        "john2": (["CT"], 1, 1),
    }


def test_series_level_one_response_per_series(find_pacs: RunningServer) -> None:
    keys = {"SeriesInstanceUID": "", "NumberOfSeriesRelatedInstances": "", "Modality": ""}
    answer = find(find_pacs.dicom_port, keys, level="SERIES", ext=RELATIONAL)
    assert answer.status == SUCCESS
    assert series(answer.responses) == sorted(SERIES_UID)
    got = {
        (series([r])[0], str(r.Modality), int(r.NumberOfSeriesRelatedInstances))
        for r in answer.responses
    }
    expected = {
        (f"{label}/{n}", s.modality, s.instances)
        for label, study in STUDY.items()
        for n, s in enumerate(study.series, start=1)
    }
    assert got == expected


def test_image_level_one_response_per_instance(find_pacs: RunningServer) -> None:
    answer = find(find_pacs.dicom_port, {"SOPInstanceUID": ""}, level="IMAGE", ext=RELATIONAL)
    assert answer.status == SUCCESS
    assert instances(answer.responses) == sorted(INSTANCE_UID)


# -- return keys -----------------------------------------------------------------------------

STUDY_RETURN_KEYS: dict[str, object] = {
    key: ""
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientComments",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "PatientAge",
        "AdmittingDiagnosesDescription",
    )
} | {"ProcedureCodeSequence": []}


def expected_study(label: str) -> dict[str, object]:
    study, patient = STUDY[label], PATIENT_OF[label]
    mods = modalities(label)
    n_series, n_instances = study_counts(label)
    return {
        "PatientName": patient.name,
        "PatientID": patient.patient_id,
        "PatientBirthDate": patient.birth_date,
        "PatientSex": patient.sex,
        "PatientComments": patient.comments or "",
        "StudyInstanceUID": STUDY_UID[label],
        "StudyDate": study.date,
        "StudyTime": study.time,
        "AccessionNumber": study.accession,
        "StudyID": label.upper(),
        "StudyDescription": study.description or "",
        "ReferringPhysicianName": study.referring or "",
        "ModalitiesInStudy": mods if len(mods) > 1 else mods[0],
        "NumberOfStudyRelatedSeries": n_series,
        "NumberOfStudyRelatedInstances": n_instances,
        "PatientAge": study.age,
        "AdmittingDiagnosesDescription": study.admitting or "",
        "ProcedureCodeSequence": list(study.procedures),
    }


def _sorted_modalities(response: Dataset) -> Dataset:
    values = response.ModalitiesInStudy
    if isinstance(values, MultiValue):
        response.ModalitiesInStudy = sorted(str(v) for v in values)
    return response


def test_study_return_keys_every_key_in_every_response(find_pacs: RunningServer) -> None:
    answer = find(find_pacs.dicom_port, STUDY_RETURN_KEYS)
    assert answer.status == SUCCESS
    got = by_label(answer.responses)
    assert sorted(got) == sorted(ALL_STUDIES)
    for label, response in got.items():
        check_keys(_sorted_modalities(response), expected_study(label))


@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_retrieve_ae_title_and_availability_when_asked(
    find_pacs: RunningServer, level: str
) -> None:
    keys: dict[str, object] = {"StudyInstanceUID": STUDY_UID["john1"]}
    if level != "STUDY":
        keys["SeriesInstanceUID"] = SERIES_UID["john1/1"] if level == "IMAGE" else ""
    if level == "IMAGE":
        keys["SOPInstanceUID"] = ""
    asked = {**keys, "RetrieveAETitle": "", "InstanceAvailability": ""}
    answer = find(find_pacs.dicom_port, asked, level=level)
    assert answer.status == SUCCESS
    assert answer.responses
    for response in answer.responses:
        # PS3.4 C.4.1.1.3.2 / C.6.1.1.5: answered, not matched.
        assert response.RetrieveAETitle == "PYPACS"
        assert response.InstanceAvailability == "ONLINE"
    plain_answer = find(find_pacs.dicom_port, keys, level=level)
    assert all("InstanceAvailability" not in r for r in plain_answer.responses)


def test_missing_values_come_back_zero_length(find_pacs: RunningServer) -> None:
    keys = {"StudyInstanceUID": "", "StudyDescription": "", "ReferringPhysicianName": ""}
    (response,) = find(find_pacs.dicom_port, {**keys, "AccessionNumber": "AX1%"}).responses
    assert studies([response]) == ["john2"]
    for keyword in ("StudyDescription", "ReferringPhysicianName"):
        assert keyword in response
        assert response[keyword].is_empty, keyword


def test_patient_return_keys(find_pacs: RunningServer) -> None:
    keys = {
        k: ""
        for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientComments")
    }
    answer = find(find_pacs.dicom_port, keys, level="PATIENT", model=PATIENT_ROOT)
    assert answer.status == SUCCESS
    assert patients(answer.responses) == sorted(ALL_PATIENTS)
    for response in answer.responses:
        p = PATIENT[str(response.PatientID)]
        check_keys(
            response,
            {
                "PatientName": p.name,
                "PatientID": p.patient_id,
                "PatientBirthDate": p.birth_date,
                "PatientSex": p.sex,
                "PatientComments": p.comments or "",
            },
        )


SERIES_RETURN_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "ProtocolName",  # no series has one
    "NumberOfSeriesRelatedInstances",
)


def test_series_return_keys(find_pacs: RunningServer) -> None:
    keys = dict.fromkeys(SERIES_RETURN_KEYS, "") | {"StudyInstanceUID": STUDY_UID["john1"]}
    answer = find(find_pacs.dicom_port, keys, level="SERIES")
    assert answer.status == SUCCESS
    assert series(answer.responses) == ["john1/1", "john1/2", "john1/3"]
    study = STUDY["john1"]
    for response in answer.responses:
        number = int(series([response])[0].rsplit("/", 1)[1])
        s = study.series[number - 1]
        check_keys(
            response,
            {
                "StudyInstanceUID": STUDY_UID["john1"],
                "SeriesInstanceUID": SERIES_UID[f"john1/{number}"],
                "Modality": s.modality,
                "SeriesNumber": number,
                "SeriesDescription": s.description,
                "SeriesDate": s.date,
                "SeriesTime": s.time,
                "BodyPartExamined": "CHEST",
                "ProtocolName": "",
                "NumberOfSeriesRelatedInstances": s.instances,
            },
        )


def test_image_return_keys(find_pacs: RunningServer) -> None:
    keywords = (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "ContentDate",
        "ImageComments",
        "ImageType",  # absent from the SR instance
        "AcquisitionDate",  # absent from all
    )
    keys = dict.fromkeys(keywords, "") | {"StudyInstanceUID": STUDY_UID["john1"]}
    answer = find(find_pacs.dicom_port, keys, level="IMAGE", ext=RELATIONAL)
    assert answer.status == SUCCESS
    labels = [f"john1/1/{i}" for i in (1, 2, 3)] + ["john1/2/1", "john1/2/2", "john1/3/1"]
    assert instances(answer.responses) == labels
    for response in answer.responses:
        label = instances([response])[0]
        _, number, instance = label.split("/")
        s = STUDY["john1"].series[int(number) - 1]
        check_keys(
            response,
            {
                "StudyInstanceUID": STUDY_UID["john1"],
                "SeriesInstanceUID": SERIES_UID[f"john1/{number}"],
                "SOPInstanceUID": INSTANCE_UID[label],
                "SOPClassUID": str(response.SOPClassUID),  # checked below
                "InstanceNumber": int(instance),
                "ContentDate": f"202401{int(instance):02d}",
                "ImageComments": f"slice {instance} of {s.instances}",
                "ImageType": "" if s.modality == "SR" else ["ORIGINAL", "PRIMARY", "AXIAL"],
                "AcquisitionDate": "",
            },
        )
        assert (
            response.SOPClassUID.name
            == {
                "CT": "CT Image Storage",
                "MR": "MR Image Storage",
                "SR": "Basic Text SR Storage",
            }[s.modality]
        )


def code_key(**keys: str) -> list[Dataset]:
    item = Dataset()
    for keyword, value in keys.items():
        setattr(item, keyword, value)
    return [item]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # PS3.4 C.2.2.2.6: "A sequence of matching Items containing only the requested
        # Attributes is returned"; a key with no item asks for the entire sequence.
        pytest.param(
            [],
            [
                {
                    "CodeValue": "CHEST01",
                    "CodingSchemeDesignator": "99TEST",
                    "CodeMeaning": "code CHEST01",
                },
                {
                    "CodeValue": "ABD02",
                    "CodingSchemeDesignator": "99TEST",
                    "CodeMeaning": "code ABD02",
                },
            ],
            id="no-item-whole-sequence",
        ),
        pytest.param(
            code_key(CodeValue="", CodingSchemeDesignator=""),
            [
                {"CodeValue": "CHEST01", "CodingSchemeDesignator": "99TEST"},
                {"CodeValue": "ABD02", "CodingSchemeDesignator": "99TEST"},
            ],
            id="universal-item-requested-keys-only",
        ),
        pytest.param(
            code_key(CodeValue="ABD02"),
            [{"CodeValue": "ABD02"}],
            id="matching-item-only",
        ),
    ],
)
def test_sequence_key_returns_matching_items_with_requested_keys(
    find_pacs: RunningServer, key: list[Dataset], expected: list[dict[str, str]]
) -> None:
    keys = {"StudyInstanceUID": STUDY_UID["john1"], "ProcedureCodeSequence": key}
    (response,) = find(find_pacs.dicom_port, keys).responses
    items = [{e.keyword: str(e.value) for e in item} for item in response.ProcedureCodeSequence]
    assert items == expected


def test_sequence_key_of_a_study_without_it_is_empty(find_pacs: RunningServer) -> None:
    keys = {"StudyInstanceUID": STUDY_UID["john2"], "ProcedureCodeSequence": code_key()}
    (response,) = find(find_pacs.dicom_port, keys).responses
    assert "ProcedureCodeSequence" in response
    assert len(response.ProcedureCodeSequence) == 0


# -- character sets --------------------------------------------------------------------------

NON_ASCII = {"PAT-MUELLER": "mue1", "PAT-NONO": "non1", "PAT-YAMADA": "yam1"}


@pytest.mark.parametrize("patient_id", sorted(NON_ASCII))
def test_non_ascii_values_decode_and_declare_a_charset(
    find_pacs: RunningServer, patient_id: str
) -> None:
    keys = {"PatientID": patient_id, "PatientName": "", "StudyDescription": ""}
    (response,) = find(find_pacs.dicom_port, {**keys, "StudyInstanceUID": ""}).responses
    label = NON_ASCII[patient_id]
    assert "SpecificCharacterSet" in response
    assert str(response.PatientName) == PATIENT[patient_id].name
    assert str(response.StudyDescription) == STUDY[label].description


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", "\\ISO 2022 IR 87"], ids=str)
def test_every_name_decodes_whatever_the_request_charset(
    find_pacs: RunningServer, charset: str | None
) -> None:
    keys = {"PatientID": "", "PatientName": ""}
    answer = find(find_pacs.dicom_port, keys, level="PATIENT", model=PATIENT_ROOT, charset=charset)
    assert answer.status == SUCCESS
    names = {str(r.PatientID): str(r.PatientName) for r in answer.responses}
    assert names == {p.patient_id: p.name for p in PATIENTS}
    for response in answer.responses:
        if not str(response.PatientName).isascii():
            assert "SpecificCharacterSet" in response, response.PatientID


def test_latin1_query_finds_the_latin1_patient(find_pacs: RunningServer) -> None:
    keys = {"PatientName": "Müller*", "StudyInstanceUID": "", "StudyDescription": ""}
    answer = find(find_pacs.dicom_port, keys, charset="ISO_IR 100")
    assert answer.status == SUCCESS
    (response,) = answer.responses
    assert studies([response]) == ["mue1"]
    assert isinstance(response.PatientName, PersonName)
    assert str(response.PatientName) == "Müller^Jürgen"
    assert str(response.StudyDescription) == "Schädel"
    assert "SpecificCharacterSet" in response


def test_iso2022_query_finds_the_japanese_patient(find_pacs: RunningServer) -> None:
    name = PATIENT["PAT-YAMADA"].name
    keys = {"PatientName": name, "StudyInstanceUID": ""}
    answer = find(find_pacs.dicom_port, keys, charset="\\ISO 2022 IR 87")
    assert answer.status == SUCCESS
    (response,) = answer.responses
    assert studies([response]) == ["yam1"]
    assert str(response.PatientName) == name
    groups = response.PatientName
    assert (groups.alphabetic, groups.ideographic, groups.phonetic) == (
        "Yamada^Tarou",
        "山田^太郎",
        "やまだ^たろう",
    )
