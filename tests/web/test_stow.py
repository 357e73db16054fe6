"""STOW-RS over real HTTP (PS3.18 10.5): instances stored byte for byte, the Store Instances
Response Module (Annex I) with the standard's statuses and reasons, every malformed request
answered clearly, and nothing acknowledged lost when the server is killed mid-request."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomgen import Spec, make_dataset, write, write_part10
from dicomweb import BOUNDARY, CONTENT_TYPE, assert_error, base, multipart, stored
from helpers import (
    assert_counts_consistent,
    blob_files,
    index_counts,
    index_rows,
    startup_check,
    tmp_files,
    wait_for,
)
from serving import RunningServer, start_pypacs
from wadodata import data_set, parts

DICOM_JSON = "application/dicom+json"
# Tags of the Store Instances Response Module (PS3.18 Table I.1-1).
RETRIEVE_URL, FAILED, REFERENCED = "00081190", "00081198", "00081199"
SOP_CLASS, SOP_INSTANCE, WARNING, FAILURE = "00081150", "00081155", "00081196", "00081197"
# FailureReason / WarningReason values (PS3.18 I.2), and pypacs' duplicate warning.
CANNOT_UNDERSTAND, DOES_NOT_MATCH, SYNTAX_NOT_SUPPORTED = 0xC000, 0xA900, 0xC122
ALREADY_STORED = 0xB111
CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_pypacs(tmp_path_factory.mktemp("stow") / "data")
    yield srv
    srv.kill()


def part10(spec: Spec, folder: Path) -> bytes:
    return write(spec, folder).read_bytes()


def stow(
    srv: RunningServer,
    body: bytes | Iterator[bytes],
    *,
    study: str | None = None,
    content_type: str | None = CONTENT_TYPE,
    accept: str | None = None,
) -> httpx.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    if accept is not None:
        headers["Accept"] = accept
    url = base(srv) + "/studies" + (f"/{study}" if study else "")
    return httpx.post(url, content=body, headers=headers, timeout=60)


def items(answer: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(answer.get(tag, {}).get("Value", []))


def value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def failures(answer: dict[str, Any]) -> list[tuple[str | None, str | None, int]]:
    """(SOP Class UID, SOP Instance UID, FailureReason) of each failed instance, sorted."""
    found = [
        (value(i, SOP_CLASS), value(i, SOP_INSTANCE), value(i, FAILURE))
        for i in items(answer, FAILED)
    ]
    return sorted(found, key=lambda f: (f[1] or "", f[2]))


def references(answer: dict[str, Any]) -> dict[str, int | None]:
    """SOP Instance UID → WarningReason (None without warning) of each stored instance."""
    return {value(i, SOP_INSTANCE): value(i, WARNING) for i in items(answer, REFERENCED)}


def sop_uid(data: bytes) -> str:
    return str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- storing -------------------------------------------------------------------------------


def test_dicomweb_client_stores_byte_for_byte(pacs: RunningServer, tmp_path: Path) -> None:
    datasets = [
        pydicom.dcmread(write(Spec("STOW1", "Client^Ann", 1, 1, i), tmp_path)) for i in (1, 2, 3)
    ]
    sent = {}
    for ds in datasets:  # what dicomweb-client sends for each
        encoded = BytesIO()
        pydicom.dcmwrite(encoded, ds)
        sent[str(ds.SOPInstanceUID)] = encoded.getvalue()

    client = DICOMwebClient(base(pacs))
    answer: Dataset = client.store_instances(datasets)

    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    assert "FailedSOPSequence" not in answer
    assert str(answer.RetrieveURL).endswith(f"/dicom-web/studies/{study}")
    got = {str(i.ReferencedSOPInstanceUID): i for i in answer.ReferencedSOPSequence}
    assert got.keys() == sent.keys()
    for sop, item in got.items():
        assert item.ReferencedSOPClassUID == CT
        assert str(item.RetrieveURL).endswith(f"/studies/{study}/series/{series}/instances/{sop}")
        assert "WarningReason" not in item

    blobs = stored(pacs)
    for sop, data in sent.items():
        assert sha(blobs[sop]) == sha(data)
    (study_row,) = [
        r for r in index_rows(pacs.database_url, "study") if r["study_instance_uid"] == study
    ]
    assert (study_row["num_series"], study_row["num_instances"]) == (1, 3)
    assert study_row["modalities_in_study"] == "CT"


def test_the_answer_is_the_store_instances_response_module(
    pacs: RunningServer, tmp_path: Path
) -> None:
    files = [part10(Spec("STOW2", "Raw^Bob", 1, s, 1, modality="MR"), tmp_path) for s in (1, 2)]
    response = stow(pacs, multipart(files))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DICOM_JSON
    answer = response.json()
    study = str(pydicom.dcmread(BytesIO(files[0])).StudyInstanceUID)
    assert answer[RETRIEVE_URL] == {"vr": "UR", "Value": [f"{base(pacs)}/studies/{study}"]}
    assert FAILED not in answer
    assert references(answer) == {sop_uid(f): None for f in files}
    for item in items(answer, REFERENCED):
        assert item[SOP_CLASS] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]}
        assert item[RETRIEVE_URL]["vr"] == "UR"
        assert value(item, RETRIEVE_URL).startswith(f"{base(pacs)}/studies/{study}/series/")
    blobs = stored(pacs)
    assert all(blobs[sop_uid(f)] == f for f in files)


def test_a_study_url_takes_its_own_instances(pacs: RunningServer, tmp_path: Path) -> None:
    files = [part10(Spec("STOW3", "Study^Url", 1, 1, i), tmp_path) for i in (1, 2)]
    study = str(pydicom.dcmread(BytesIO(files[0])).StudyInstanceUID)
    response = stow(pacs, multipart(files), study=study)
    assert response.status_code == 200, response.text
    assert references(response.json()) == {sop_uid(f): None for f in files}


def test_a_part_without_preamble_is_stored_with_one(pacs: RunningServer) -> None:
    ds = make_dataset(Spec("STOW4", "No^Preamble", 1, 1, 1))
    encoded = BytesIO()
    pydicom.dcmwrite(encoded, ds)  # a data set without preamble: meta group first
    data = encoded.getvalue()
    assert data[:2] == b"\x02\x00"
    response = stow(pacs, multipart([data]))
    assert response.status_code == 200, response.text
    assert stored(pacs)[str(ds.SOPInstanceUID)] == bytes(128) + b"DICM" + data


def _encoded(ds: Dataset, syntax: str) -> bytes:
    """The data set alone, in ``syntax``, as a sender without Part 10 framing writes it."""
    out = DicomBytesIO()
    out.is_little_endian = syntax != ExplicitVRBigEndian
    out.is_implicit_VR = syntax == ImplicitVRLittleEndian
    dataset = ds.copy()
    del dataset.file_meta
    if syntax == ExplicitVRBigEndian:  # pixel words in the data set's byte order
        dataset.PixelData = np.frombuffer(ds.PixelData, "<u2").byteswap().tobytes()
    write_dataset(out, dataset)
    return out.getvalue()


def _meta(ds: Dataset, syntax: str) -> bytes:
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = UID(syntax)
    out = DicomBytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue()


# How a part is framed: the bytes sent, given the data set's bytes and its file meta group.
FRAMINGS: dict[str, Callable[[bytes, bytes], bytes]] = {
    "meta without preamble": lambda data, meta: meta + data,
    "DICM without preamble": lambda data, meta: b"DICM" + meta + data,
    "no file meta": lambda data, meta: data,
}


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
)
@pytest.mark.parametrize("framing", FRAMINGS)
def test_parts_without_part10_framing_are_stored_with_it(
    pacs: RunningServer, framing: str, syntax: str
) -> None:
    number = list(FRAMINGS).index(framing) * 3 + [
        str(ImplicitVRLittleEndian),
        str(ExplicitVRLittleEndian),
        str(ExplicitVRBigEndian),
    ].index(syntax)
    ds = make_dataset(Spec("STOW-FRAME", "Frame^Less", 1, 1, number + 1))
    data = _encoded(ds, syntax)
    sent = FRAMINGS[framing](data, _meta(ds, syntax))
    assert sent[128:132] != b"DICM"
    response = stow(pacs, multipart([sent]))
    assert response.status_code == 200, response.text
    uid = str(ds.SOPInstanceUID)
    assert references(response.json()) == {uid: None}
    # WADO-RS with transfer-syntax=* sends the stored bytes: the data set exactly as sent,
    # behind file meta information that names its transfer syntax (PS3.10 7.1).
    url = (
        f"{base(pacs)}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{uid}"
    )
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    answer = httpx.get(url, headers={"Accept": accept}, timeout=30)
    assert answer.status_code == 200, answer.text
    (part,) = parts(answer)
    assert part.body[128:132] == b"DICM"
    assert data_set(part.body) == data
    meta = pydicom.dcmread(BytesIO(part.body), stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == syntax
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == uid
    assert stored(pacs)[uid] == part.body


def test_a_bare_data_set_without_its_uids_is_refused(pacs: RunningServer) -> None:
    ds = make_dataset(Spec("STOW-FRAME", "No^Uids", 2, 1, 1))
    del ds.SOPInstanceUID
    response = stow(pacs, multipart([_encoded(ds, ExplicitVRLittleEndian)]))
    assert response.status_code == 409, response.text
    assert failures(response.json()) == [(None, None, CANNOT_UNDERSTAND)]


def test_parts_without_content_type_preamble_and_epilogue(
    pacs: RunningServer, tmp_path: Path
) -> None:
    data = part10(Spec("STOW5", "Plain^Part", 1, 1, 1), tmp_path)
    body = b"a preamble\r\n" + multipart([(None, data)]) + b"an epilogue"
    boundary_quoted = f'multipart/related; boundary="{BOUNDARY}"; type=application/dicom'
    response = stow(pacs, body, content_type=boundary_quoted)
    assert response.status_code == 200, response.text
    assert references(response.json()) == {sop_uid(data): None}


# -- refused requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/dicom",
        "application/json",
        f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
        f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
        f"multipart/form-data; boundary={BOUNDARY}",
    ],
)
def test_other_media_types_are_415(
    pacs: RunningServer, tmp_path: Path, content_type: str | None
) -> None:
    data = part10(Spec("STOW6", "Media^Type", 1, 1, 1), tmp_path)
    before = index_counts(pacs.database_url)
    response = stow(pacs, multipart([data]), content_type=content_type)
    message = assert_error(response, 415, "unsupported-media-type", "Content-Type")
    assert 'multipart/related; type="application/dicom"' in message
    assert index_counts(pacs.database_url) == before


def test_a_missing_boundary_is_400(pacs: RunningServer, tmp_path: Path) -> None:
    data = part10(Spec("STOW7", "No^Boundary", 1, 1, 1), tmp_path)
    response = stow(
        pacs, multipart([data]), content_type='multipart/related; type="application/dicom"'
    )
    assert "boundary" in assert_error(response, 400, "bad-parameter", "Content-Type")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "holds no part"),
        (b"just some bytes", "holds no part"),
        (f"--{BOUNDARY}--\r\n".encode(), "holds no instance"),
        (f"--{BOUNDARY}\r\nbroken header\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "header line"),
    ],
)
def test_malformed_bodies_are_400(pacs: RunningServer, body: bytes, message: str) -> None:
    assert message in assert_error(stow(pacs, body), 400, "bad-multipart", None)


def test_a_truncated_body_is_400_and_says_what_was_stored(
    pacs: RunningServer, tmp_path: Path
) -> None:
    first, second = (part10(Spec("STOW8", "Cut^Short", 1, 1, i), tmp_path) for i in (1, 2))
    body = multipart([first, second])
    cut = body[: len(body) - len(second) // 2 - 40]  # the second part and the end are missing
    message = assert_error(stow(pacs, cut), 400, "bad-multipart", None)
    assert "ends before its closing delimiter" in message
    assert message.endswith("(stored before the fault: 1 instance)")
    blobs = stored(pacs)
    assert blobs[sop_uid(first)] == first  # complete, hence durable, yet never acknowledged
    assert sop_uid(second) not in blobs


def test_a_part_that_is_not_dicom_fails_alone(pacs: RunningServer) -> None:
    response = stow(pacs, multipart([b"this is not DICOM"]))
    assert response.status_code == 409, response.text
    answer = response.json()
    assert failures(answer) == [(None, None, CANNOT_UNDERSTAND)]
    assert REFERENCED not in answer
    assert answer[RETRIEVE_URL] == {"vr": "UR"}  # Type 2: empty, nothing stored


def test_good_and_bad_parts_give_202_with_exactly_the_bad_ones(
    pacs: RunningServer, tmp_path: Path
) -> None:
    good = [part10(Spec("STOW9", "Mixed^Bag", 1, 1, i), tmp_path) for i in (1, 2)]
    study = str(pydicom.dcmread(BytesIO(good[0])).StudyInstanceUID)
    other_study = part10(Spec("STOW9", "Mixed^Bag", 2, 1, 1), tmp_path)
    as_text = part10(Spec("STOW9", "Mixed^Bag", 1, 1, 4), tmp_path)
    no_sop_instance = make_dataset(Spec("STOW9", "Mixed^Bag", 1, 1, 5))
    del no_sop_instance.SOPInstanceUID
    no_sop_instance.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")
    missing_uid = BytesIO()
    no_sop_instance.save_as(missing_uid, enforce_file_format=True)
    mpeg = make_dataset(Spec("STOW9", "Mixed^Bag", 1, 1, 6))
    mpeg.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 Main Profile
    video = write_part10(tmp_path / "video.dcm", mpeg.file_meta, b"\x08\x00\x16\x00").read_bytes()
    whole = part10(Spec("STOW9", "Mixed^Bag", 1, 1, 7, rows=64), tmp_path)
    truncated = whole[:-100]  # cut short in its pixel data
    truncated_uid = sop_uid(whole)

    body = multipart(
        [
            good[0],
            b"garbage",
            other_study,
            ("text/plain", as_text),
            good[1],
            missing_uid.getvalue(),
            video,
            truncated,
        ]
    )
    response = stow(pacs, body, study=study)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert references(answer) == {sop_uid(good[0]): None, sop_uid(good[1]): None}
    mpeg_uid = str(mpeg.file_meta.MediaStorageSOPInstanceUID)
    assert failures(answer) == sorted(
        [
            (None, None, CANNOT_UNDERSTAND),  # not DICOM
            (None, None, CANNOT_UNDERSTAND),  # a part of another media type
            (CT, sop_uid(other_study), DOES_NOT_MATCH),  # another study than the URL's
            (CT, "1.2.3.4.5", DOES_NOT_MATCH),  # lacks SOP Instance UID
            (CT, mpeg_uid, SYNTAX_NOT_SUPPORTED),
            (CT, truncated_uid, CANNOT_UNDERSTAND),
        ],
        key=lambda f: (f[1] or "", f[2]),
    )
    assert value(answer, RETRIEVE_URL) == f"{base(pacs)}/studies/{study}"
    blobs = stored(pacs)
    assert blobs[sop_uid(good[0])] == good[0] and blobs[sop_uid(good[1])] == good[1]
    for absent in (sop_uid(other_study), sop_uid(as_text), truncated_uid, mpeg_uid):
        assert absent not in blobs


def test_only_other_studies_is_409(pacs: RunningServer, tmp_path: Path) -> None:
    files = [part10(Spec("STOW10", "Other^Study", 2, 1, i), tmp_path) for i in (1, 2)]
    url_study = str(
        pydicom.dcmread(BytesIO(part10(Spec("STOW10", "X", 1, 1, 1), tmp_path))).StudyInstanceUID
    )
    response = stow(pacs, multipart(files), study=url_study)
    assert response.status_code == 409, response.text
    assert failures(response.json()) == sorted((CT, sop_uid(f), DOES_NOT_MATCH) for f in files)
    assert not {sop_uid(f) for f in files} & stored(pacs).keys()


def test_a_duplicate_is_referenced_with_a_warning(pacs: RunningServer, tmp_path: Path) -> None:
    data = part10(Spec("STOW11", "Twice^Sent", 1, 1, 1), tmp_path)
    fresh = part10(Spec("STOW11", "Twice^Sent", 1, 1, 2), tmp_path)
    assert stow(pacs, multipart([data])).status_code == 200
    (before,) = [
        r
        for r in index_rows(pacs.database_url, "instance")
        if r["sop_instance_uid"] == sop_uid(data)
    ]
    blobs_before = len(blob_files(pacs.data))

    response = stow(pacs, multipart([data, fresh]))
    assert response.status_code == 202, response.text
    assert references(response.json()) == {sop_uid(data): ALREADY_STORED, sop_uid(fresh): None}
    (after,) = [
        r
        for r in index_rows(pacs.database_url, "instance")
        if r["sop_instance_uid"] == sop_uid(data)
    ]
    assert after["blob_key"] == before["blob_key"]
    assert len(blob_files(pacs.data)) == blobs_before + 1


@pytest.mark.parametrize(
    ("accept", "status", "answer_type"),
    [
        ("application/dicom+xml", 406, None),
        ("application/dicom+json;q=0", 406, None),
        ('multipart/related; type="application/dicom+xml"', 406, None),
        ("application/json", 200, "application/json"),
        ("application/dicom+xml, application/dicom+json;q=0.5", 200, DICOM_JSON),
        ("application/json;q=0.4, application/dicom+json", 200, DICOM_JSON),
        ("text/html, */*;q=0.1", 200, DICOM_JSON),
        ("application/*", 200, DICOM_JSON),
    ],
)
def test_accept(
    pacs: RunningServer,
    tmp_path: Path,
    accept: str,
    status: int,
    answer_type: str | None,
) -> None:
    patient = "STOW12-" + hashlib.sha256(accept.encode()).hexdigest()[:8]
    data = part10(Spec(patient, "Accept^Header", 1, 1, 1), tmp_path)
    response = stow(pacs, multipart([data]), accept=accept)
    if status == 406:
        assert_error(response, 406, "not-acceptable", "Accept")
        assert sop_uid(data) not in stored(pacs)  # refused before the body was read
    else:
        assert response.status_code in (200, 202), response.text
        assert response.headers["content-type"] == answer_type


def test_a_malformed_study_uid_in_the_url_is_400(pacs: RunningServer, tmp_path: Path) -> None:
    data = part10(Spec("STOW13", "Bad^Url", 1, 1, 1), tmp_path)
    response = stow(pacs, multipart([data]), study="1.2.abc!")
    assert "not a UID" in assert_error(response, 400, "bad-parameter", "study")


# -- the size limit ------------------------------------------------------------------------


def test_bodies_past_the_limit_are_413(server_factory: Any, tmp_path: Path) -> None:
    config = tmp_path / "pypacs.toml"
    config.write_text("[web]\nstow_max_bytes = 20000\n")
    srv: RunningServer = server_factory("--config", str(config))
    files = [part10(Spec("BIG", "Large^Body", 1, 1, i, rows=64), tmp_path) for i in (1, 2, 3)]
    assert all(8000 < len(f) < 10000 for f in files)

    # Announced by Content-Length: refused before a byte is read.
    message = assert_error(stow(srv, multipart(files)), 413, "too-large", None)
    assert "larger than 20000 bytes ([web] stow_max_bytes)" in message
    assert index_counts(srv.database_url)["instance"] == 0
    assert blob_files(srv.data) == []

    # Chunked, no length: reading stops at the limit; the answer says what was stored.
    body = multipart(files)
    chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))
    message = assert_error(stow(srv, chunks), 413, "too-large", None)
    assert message.endswith("; stored before it: 2 instances")
    assert set(stored(srv)) == {sop_uid(files[0]), sop_uid(files[1])}

    # Under the limit: stored.
    response = stow(srv, multipart(files[2:]))
    assert response.status_code == 200, response.text


# -- durability ----------------------------------------------------------------------------


class HeldBody:
    """A request body sent part by part, that stops halfway through part ``hold`` until
    released (or the connection breaks)."""

    def __init__(self, parts: Sequence[bytes], hold: int) -> None:
        self.body = multipart(parts)
        self.cut = self.body.index(parts[hold]) + len(parts[hold]) // 2
        self.release = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, self.cut, 4096):
            yield self.body[start : min(start + 4096, self.cut)]
        self.release.wait(timeout=30)
        yield self.body[self.cut :]


def test_sigkill_mid_stow_loses_nothing_acknowledged(server_factory: Any, tmp_path: Path) -> None:
    srv: RunningServer = server_factory()
    acknowledged = [
        part10(Spec("KILL", "Killed^Mid", 1, 1, i, rows=32), tmp_path) for i in range(5)
    ]
    response = stow(srv, multipart(acknowledged))
    assert response.status_code == 200, response.text

    in_flight = [
        part10(Spec("KILL", "Killed^Mid", 2, s, i, rows=32), tmp_path)
        for s in (1, 2)
        for i in range(4)
    ]
    held = HeldBody(in_flight, hold=5)
    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(stow(srv, iter(held)))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    # The five parts before the held one are stored (durable, not acknowledged): kill now.
    wait_for(lambda: index_counts(srv.database_url)["instance"] == 10, what="5 parts stored")
    srv.kill()
    held.release.set()
    sender.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError), outcome

    restarted = start_pypacs(srv.data)
    try:
        check = startup_check(restarted.log())
        assert (check["missing"], check["unreadable"]) == (0, 0)
        blobs = stored(restarted)
        for data in acknowledged:
            assert blobs[sop_uid(data)] == data
        # What was stored stays whole; the part cut short left nothing.
        expected = {sop_uid(d): d for d in acknowledged + in_flight[:5]}
        assert blobs == expected
        rows = index_rows(restarted.database_url, "instance")
        assert {
            str(p.relative_to(restarted.data / "blobs")) for p in blob_files(restarted.data)
        } == {r["blob_key"] for r in rows}
        assert tmp_files(restarted.data) == []
        assert_counts_consistent(restarted.database_url)

        # The whole request again: the rest is stored, the others reported already there.
        response = stow(restarted, multipart(in_flight))
        assert response.status_code == 202, response.text
        warnings = references(response.json())
        assert sorted(warnings.values(), key=str) == sorted(
            [ALREADY_STORED] * 5 + [None] * 3, key=str
        )
        assert_counts_consistent(restarted.database_url)
    finally:
        restarted.kill()


def test_sigkill_under_parallel_stow_keeps_every_acknowledged_instance(
    server_factory: Any, tmp_path: Path
) -> None:
    srv: RunningServer = server_factory()
    threads, requests_each, per_request = 4, 12, 3
    sent: dict[str, bytes] = {}
    batches: list[list[list[bytes]]] = []
    for t in range(threads):
        requests = []
        for r in range(requests_each):
            files = [
                part10(
                    Spec(f"PAR{t}", f"Par^{t}", 1 + r // 6, 1 + r // 3, r * 10 + i, rows=32),
                    tmp_path,
                )
                for i in range(per_request)
            ]
            sent.update({sop_uid(f): f for f in files})
            requests.append(files)
        batches.append(requests)
    acked: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()

    def run(requests: list[list[bytes]]) -> None:
        with httpx.Client(timeout=10) as client:
            for files in requests:
                try:
                    response = client.post(
                        base(srv) + "/studies",
                        content=multipart(files),
                        headers={"Content-Type": CONTENT_TYPE},
                    )
                except httpx.HTTPError:
                    return
                if response.status_code != 200:
                    return
                with lock:
                    acked.update(sop_uid(f) for f in files)
                    if len(acked) >= 30:
                        enough.set()

    workers = [threading.Thread(target=run, args=(b,)) for b in batches]
    for w in workers:
        w.start()
    assert enough.wait(timeout=60), "the requests never got going"
    srv.kill()
    for w in workers:
        w.join(timeout=30)
    assert 30 <= len(acked) < len(sent), "the kill did not land mid-ingest"

    restarted = start_pypacs(srv.data)
    try:
        assert startup_check(restarted.log())["missing"] == 0
        blobs = stored(restarted)
        assert acked <= blobs.keys()
        assert blobs.keys() <= sent.keys()
        for sop, data in blobs.items():
            assert sha(data) == sha(sent[sop])
        assert tmp_files(restarted.data) == []
        assert len(blob_files(restarted.data)) == len(blobs)
        assert_counts_consistent(restarted.database_url)
    finally:
        restarted.kill()
