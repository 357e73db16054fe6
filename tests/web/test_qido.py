"""QIDO-RS over real HTTP: the same answers as C-FIND on the same archive, limit and offset,
includefield, the default attribute sets, and a clear 400 for every malformed parameter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from dicomgen import write_dataset
from findcases import IMAGE_CASES, SERIES_CASES, STUDY_CASES
from findfixtures import (
    ALL_STUDIES,
    ENTITIES,
    INSTANCE_UID,
    SERIES_UID,
    STUDY_UID,
    SUCCESS,
    find,
    fixture_datasets,
    serve_datasets,
)
from helpers import pg_database, status_of, store_files
from serving import RunningServer, start_pypacs

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"


def base(srv: RunningServer) -> str:
    return f"http://127.0.0.1:{srv.http_port}/dicom-web"


def params_of(keys: Mapping[str, object]) -> list[tuple[str, str]]:
    """C-FIND keys as QIDO-RS query parameters (a sequence item's keys as dotted paths)."""
    params: list[tuple[str, str]] = []
    for keyword, value in keys.items():
        if isinstance(value, list):
            items: list[Dataset] = value
            if not items:
                params.append((keyword, ""))
            for item in items:
                params += [(f"{keyword}.{e.keyword}", str(e.value)) for e in item]
        else:
            params.append((keyword, str(value)))
    return params


def qido(srv: RunningServer, path: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    response = httpx.get(base(srv) + path, params=tuple(params), timeout=30)
    if response.status_code == 204:
        assert response.content == b""
        return []
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    result: list[dict[str, Any]] = response.json()
    return result


def labels(objects: list[dict[str, Any]], tag: str) -> list[str]:
    return sorted(ENTITIES.label_of.get(o[tag]["Value"][0], "?") for o in objects)


def pn_text(obj: Mapping[str, Any], tag: str) -> str:
    """A PN value in its DICOM string form: the three groups joined by "="."""
    value = (obj.get(tag) or {}).get("Value", [{}])[0] or {}
    groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


def first_value(obj: Mapping[str, Any], tag: str) -> object:
    element = obj.get(tag) or {}
    values = element.get("Value") or [None]
    value = values[0]
    return value.get("Alphabetic") if isinstance(value, dict) else value


# -- the two front doors agree -----------------------------------------------------------------


def _cfind_values(responses: list[Dataset], keyword: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for r in responses:
        value = r.get(keyword)
        if isinstance(value, int | float):
            out[str(r.StudyInstanceUID)] = value
        else:
            out[str(r.StudyInstanceUID)] = str(value) if value not in (None, "") else None
    return out


@pytest.mark.parametrize(("keys", "expected"), STUDY_CASES)
def test_study_search_agrees_with_c_find(
    find_pacs: RunningServer, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    returned = ["PatientName", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]
    ident: dict[str, object] = {k: "" for k in returned}
    ident |= {**keys, "StudyInstanceUID": keys.get("StudyInstanceUID", "")}
    answer = find(find_pacs.dicom_port, ident)
    assert answer.status == SUCCESS
    objects = qido(find_pacs, "/studies", params_of(keys))
    uids = [o[STUDY]["Value"][0] for o in objects]
    assert sorted(uids) == sorted(str(r.StudyInstanceUID) for r in answer.responses)
    assert labels(objects, STUDY) == sorted(expected)
    for obj in objects:
        uid = obj[STUDY]["Value"][0]
        cfind = next(r for r in answer.responses if r.StudyInstanceUID == uid)
        assert pn_text(obj, "00100010") == str(cfind.PatientName)
        assert first_value(obj, "00080020") == cfind.StudyDate
        modalities = cfind.ModalitiesInStudy
        as_list = [modalities] if isinstance(modalities, str) else list(modalities or [])
        assert obj["00080061"].get("Value", []) == as_list
        assert first_value(obj, "00201208") == int(cfind.NumberOfStudyRelatedInstances)


@pytest.mark.parametrize(("keys", "expected"), SERIES_CASES)
def test_series_search_agrees_with_c_find(
    find_pacs: RunningServer, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    study = STUDY_UID["john1"]
    ident = {"StudyInstanceUID": study, "SeriesInstanceUID": "", **keys}
    answer = find(find_pacs.dicom_port, ident, level="SERIES")
    assert answer.status == SUCCESS
    objects = qido(find_pacs, f"/studies/{study}/series", params_of(keys))
    assert labels(objects, SERIES) == sorted(expected)
    assert sorted(o[SERIES]["Value"][0] for o in objects) == sorted(
        str(r.SeriesInstanceUID) for r in answer.responses
    )


@pytest.mark.parametrize(("keys", "expected"), IMAGE_CASES)
def test_instance_search_agrees_with_c_find(
    find_pacs: RunningServer, keys: dict[str, object], expected: tuple[str, ...]
) -> None:
    study, series = STUDY_UID["john1"], SERIES_UID["john1/1"]
    ident = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": "", **keys}
    answer = find(find_pacs.dicom_port, ident, level="IMAGE")
    assert answer.status == SUCCESS
    objects = qido(find_pacs, f"/studies/{study}/series/{series}/instances", params_of(keys))
    assert labels(objects, SOP) == sorted(expected)
    assert sorted(o[SOP]["Value"][0] for o in objects) == sorted(
        str(r.SOPInstanceUID) for r in answer.responses
    )


# -- resources and what they return ------------------------------------------------------------


def test_study_defaults_and_retrieve_url(find_pacs: RunningServer) -> None:
    [obj] = qido(find_pacs, "/studies", [("StudyInstanceUID", STUDY_UID["john1"])])
    # PS3.18 Table 10.6.3-3: each default attribute is present, with a value or empty.
    for tag in ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090"):
        assert tag in obj, tag
    for tag in ("00100010", "00100020", "00100030", "00100040", "00200010", "00201206"):
        assert tag in obj, tag
    assert obj["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert obj["00081190"] == {
        "vr": "UR",
        "Value": [f"{base(find_pacs)}/studies/{STUDY_UID['john1']}"],
    }
    assert obj["00201206"] == {"vr": "IS", "Value": [3]}
    assert first_value(obj, "00100020") == "PAT-JOHN"
    assert list(obj) == sorted(obj), "attributes in tag order"


def test_series_across_studies_carry_study_attributes(find_pacs: RunningServer) -> None:
    objects = qido(find_pacs, "/series", [("Modality", "MR")])
    mr = {ENTITIES.label_of[o[SERIES]["Value"][0]] for o in objects}
    assert "john1/2" in mr
    john = next(o for o in objects if ENTITIES.label_of[o[SERIES]["Value"][0]] == "john1/2")
    assert first_value(john, STUDY) == STUDY_UID["john1"]
    assert first_value(john, "00100020") == "PAT-JOHN"
    assert john["00081190"]["Value"] == [
        f"{base(find_pacs)}/studies/{STUDY_UID['john1']}/series/{SERIES_UID['john1/2']}"
    ]
    # Under a study, the study's own attributes are not repeated.
    [under] = qido(find_pacs, f"/studies/{STUDY_UID['john1']}/series", [("Modality", "MR")])
    assert "00100020" not in under
    assert first_value(under, "00201209") == john["00201209"]["Value"][0]


def test_instances_of_a_study_and_across_studies(find_pacs: RunningServer) -> None:
    study = STUDY_UID["john1"]
    in_study = qido(find_pacs, f"/studies/{study}/instances", [])
    expected = sorted(label for label in INSTANCE_UID if label.startswith("john1/"))
    assert labels(in_study, SOP) == expected
    across = qido(find_pacs, "/instances", [("StudyInstanceUID", study)])
    assert labels(across, SOP) == expected
    assert all(first_value(o, "00100020") == "PAT-JOHN" for o in across)
    assert all(first_value(o, SERIES) is not None for o in across)


def test_includefield_keyword_tag_and_all(find_pacs: RunningServer) -> None:
    study = STUDY_UID["john1"]
    [obj] = qido(
        find_pacs,
        "/studies",
        [("StudyInstanceUID", study), ("includefield", "StudyDescription,00101010")],
    )
    assert first_value(obj, "00081030") == "Chest CT"
    assert first_value(obj, "00101010") == "063Y"
    [everything] = qido(
        find_pacs,
        f"/studies/{study}/series/{SERIES_UID['john1/1']}/instances",
        [("InstanceNumber", "2"), ("includefield", "all")],
    )
    assert first_value(everything, "00204000") == "slice 2 of 3"  # ImageComments, no column
    assert first_value(everything, "00081030") == "Chest CT"  # from the study level
    assert "7FE00010" not in everything  # never bulk data


def test_sequence_item_keys_are_returned(find_pacs: RunningServer) -> None:
    [obj] = qido(
        find_pacs,
        "/studies",
        [("StudyInstanceUID", STUDY_UID["john1"]), ("ProcedureCodeSequence.CodeValue", "ABD02")],
    )
    items = obj["00081032"]["Value"]
    assert [i["00080100"]["Value"][0] for i in items] == ["ABD02"]


def test_limit_and_offset_page_through_exactly(find_pacs: RunningServer) -> None:
    everything = [o[STUDY]["Value"][0] for o in qido(find_pacs, "/studies", [])]
    assert sorted(labels(qido(find_pacs, "/studies", []), STUDY)) == sorted(ALL_STUDIES)
    pages: list[str] = []
    for offset in range(0, len(everything) + 3, 3):
        page = qido(find_pacs, "/studies", [("limit", "3"), ("offset", str(offset))])
        pages += [o[STUDY]["Value"][0] for o in page]
    assert pages == everything
    # The same with a key matched in Python (PatientAge has no column).
    aged = [o[STUDY]["Value"][0] for o in qido(find_pacs, "/studies", [("PatientAge", "030Y")])]
    assert len(aged) >= 3
    second = qido(find_pacs, "/studies", [("PatientAge", "030Y"), ("limit", "2"), ("offset", "1")])
    assert [o[STUDY]["Value"][0] for o in second] == aged[1:3]


def test_no_match_is_204(find_pacs: RunningServer) -> None:
    response = httpx.get(base(find_pacs) + "/studies", params={"PatientID": "NOBODY"})
    assert response.status_code == 204
    assert response.content == b""
    unknown = "1.2.826.0.1.3680043.10.1255.7001.99"
    assert httpx.get(base(find_pacs) + f"/studies/{unknown}/series").status_code == 204


def test_fuzzymatching_is_refused_with_a_warning(find_pacs: RunningServer) -> None:
    response = httpx.get(
        base(find_pacs) + "/studies", params={"PatientName": "smith^john", "fuzzymatching": "true"}
    )
    assert response.status_code == 200
    assert response.headers["warning"].startswith(f"299 {base(find_pacs)}: The fuzzymatching")
    assert len(response.json()) == 2
    plain = httpx.get(base(find_pacs) + "/studies", params={"fuzzymatching": "false"})
    assert "warning" not in plain.headers


# -- malformed requests: one error shape, the parameter named ----------------------------------

BAD = [
    pytest.param("/studies", [("limit", "-1")], "limit", id="limit-negative"),
    pytest.param("/studies", [("limit", "ten")], "limit", id="limit-text"),
    pytest.param("/studies", [("offset", "1.5")], "offset", id="offset-fraction"),
    pytest.param("/studies", [("limit", "1"), ("limit", "2")], "limit", id="limit-twice"),
    pytest.param("/studies", [("fuzzymatching", "yes")], "fuzzymatching", id="fuzzy-not-bool"),
    pytest.param("/studies", [("StudyDate", "2024-01-01")], "StudyDate", id="date-malformed"),
    pytest.param("/studies", [("StudyDate", "-")], "StudyDate", id="range-no-bounds"),
    pytest.param("/studies", [("StudyTime", "10h")], "StudyTime", id="time-malformed"),
    pytest.param("/studies", [("NotAKeyword", "1")], "NotAKeyword", id="unknown-keyword"),
    pytest.param("/studies", [("00091010", "1")], "00091010", id="private-tag"),
    pytest.param("/studies", [("StudyInstanceUID", "1.2.x!")], "StudyInstanceUID", id="bad-uid"),
    pytest.param("/studies", [("includefield", "Nope")], "includefield", id="includefield"),
    pytest.param("/studies", [("PatientID", "A"), ("PatientID", "B")], "PatientID", id="twice"),
    pytest.param("/studies", [("ProcedureCodeSequence", "X")], "ProcedureCodeSequence", id="sq"),
    pytest.param("/studies", [("A.B.C", "X")], "A.B.C", id="deep-path"),
    pytest.param("/studies/1.2.abc!/series", [], "StudyInstanceUID", id="path-uid"),
    pytest.param(
        "/studies/1.2.3/series", [("StudyInstanceUID", "1.2.4")], "StudyInstanceUID", id="dup"
    ),
]


@pytest.mark.parametrize(("path", "params", "parameter"), BAD)
def test_malformed_parameter_is_400_naming_it(
    find_pacs: RunningServer, path: str, params: list[tuple[str, str]], parameter: str
) -> None:
    response = httpx.get(base(find_pacs) + path, params=tuple(params))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == 400
    assert error["code"] == "bad-parameter"
    assert error["parameter"] == parameter
    assert error["message"]


def test_xml_results_are_not_acceptable(find_pacs: RunningServer) -> None:
    response = httpx.get(
        base(find_pacs) + "/studies",
        headers={"Accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert response.status_code == 406
    assert response.json()["error"]["parameter"] == "Accept"
    ok = httpx.get(base(find_pacs) + "/studies", headers={"Accept": "application/dicom+json"})
    assert ok.status_code == 200


# -- a real DICOMweb client --------------------------------------------------------------------


def test_dicomweb_client_searches(find_pacs: RunningServer) -> None:
    client = DICOMwebClient(base(find_pacs))
    found = client.search_for_studies(search_filters={"PatientID": "PAT-JOHN"})
    assert labels(found, STUDY) == ["john1", "john2"]
    paged = client.search_for_studies(limit=2, offset=1)
    everything = client.search_for_studies()
    assert [o[STUDY] for o in paged] == [o[STUDY] for o in everything[1:3]]
    series = client.search_for_series(STUDY_UID["john1"], search_filters={"Modality": "CT"})
    assert labels(series, SERIES) == ["john1/1"]
    instances = client.search_for_instances(
        STUDY_UID["john1"], SERIES_UID["john1/1"], fields=["ImageComments"]
    )
    assert sorted(str(first_value(o, "00204000")) for o in instances) == [
        "slice 1 of 3",
        "slice 2 of 3",
        "slice 3 of 3",
    ]
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []


# -- server settings and the second index backend ----------------------------------------------


def test_default_limit_caps_and_warns(tmp_path: Path, find_pacs: RunningServer) -> None:
    config = tmp_path / "pypacs.toml"
    config.write_text("[web]\nqido_default_limit = 4\n")
    srv = start_pypacs(tmp_path / "data", "--config", str(config))
    try:
        folder = tmp_path / "in"
        folder.mkdir()
        files = [write_dataset(ds, folder) for ds in fixture_datasets()]
        assert {status_of(s) for s in store_files(srv.dicom_port, files).values()} == {"0x0000"}
        capped = httpx.get(base(srv) + "/studies")
        assert capped.status_code == 200
        assert len(capped.json()) == 4
        assert "Additional results can be requested" in capped.headers["warning"]
        asked = httpx.get(base(srv) + "/studies", params={"limit": "100"})
        assert len(asked.json()) == len(ALL_STUDIES)
        assert "warning" not in asked.headers
    finally:
        srv.kill()


@pytest.mark.postgresql
def test_postgresql_index_answers_the_same(
    tmp_path_factory: pytest.TempPathFactory, find_pacs: RunningServer
) -> None:
    for url in pg_database():
        srv = serve_datasets(tmp_path_factory, "qido-pg", "--database-url", url)
        try:
            for path, params in [
                ("/studies", [("PatientName", "SMI*"), ("StudyDate", "20240201-")]),
                ("/studies", [("PatientAge", "030Y"), ("limit", "2"), ("offset", "1")]),
                ("/series", [("Modality", "?R")]),
                ("/instances", [("ImageComments", "slice 2*")]),
            ]:
                assert qido(srv, path, params) == [
                    {**o, "00081190": _rebased(o["00081190"], find_pacs, srv)}
                    for o in qido(find_pacs, path, params)
                ], (path, params)
        finally:
            srv.kill()


def _rebased(element: dict[str, Any], old: RunningServer, new: RunningServer) -> dict[str, Any]:
    return {"vr": "UR", "Value": [element["Value"][0].replace(base(old), base(new))]}
