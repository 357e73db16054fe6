"""Every instance accepted is served whole, by every door: awkward files (wrong offset
tables, several fragments per frame, 12-bit JPEG, big endian, non-conforming UIDs, retired
and private SOP classes) stored by C-STORE and by STOW-RS come back byte-identical as
stored (WADO-RS ``transfer-syntax=*``, C-GET in their own syntax) and with every frame when
decompressed (C-GET to an uncompressed-only peer, WADO-RS default, frames), or are refused
with a status; never a shorter instance. Real clients where real clients found the defects:
DCMTK's getscu proposing compressed syntaxes first, GDCM's gdcmscu moving a study."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
from pydicom import config, dcmread
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet as GET,
)

from awkward import (
    library_files,
    made,
    number_of_frames,
    unsplittable,
)
from dicomgen import Spec, make_dataset, write_dataset
from helpers import association as dimse_association
from helpers import association_lines, store_files, wait_for
from receiver import free_port
from serving import RunningServer, start_pypacs
from wadodata import data_set, parts

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
ELE = ts.ExplicitVRLittleEndian
ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DEFAULT = 'multipart/related; type="application/dicom"'
RETIRED_US = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)
PRIVATE_CLASS = "1.3.6.1.4.1.9590.100.1.2.999"
ODD_STUDY = "1.2.03.0040.ab-7"  # leading zeros and letters: PS3.5 9.1 broken as devices do
GDCM_MOVER = "GDCMSCU"
# Lossy syntaxes decode with rounding that differs by a unit between JPEG libraries.
_LOSSY = {ts.JPEGBaseline8Bit, ts.JPEGExtended12Bit}
_DCMTK_DECODER: dict[str, str] = {
    **dict.fromkeys(ts.JPEGTransferSyntaxes, "dcmdjpeg"),
    **dict.fromkeys(ts.JPEGLSTransferSyntaxes, "dcmdjpls"),
    ts.RLELossless: "dcmdrle",
}


@dataclass
class Item:
    name: str
    path: Path
    syntax: str
    sop_class: str
    sop_instance: str
    study: str
    series: str
    frames: int
    truth: np.ndarray | None  # all frames decoded, independently of pypacs


@dataclass
class Corpus:
    folder: Path
    items: list[Item]
    broken: Item  # Number of Frames the data cannot give
    by_cstore: RunningServer
    by_stow: RunningServer
    extras: dict[str, Path] = field(default_factory=dict)

    def servers(self) -> dict[str, RunningServer]:
        return {"c-store": self.by_cstore, "stow": self.by_stow}


def dcmtk_truth(path: Path, folder: Path) -> np.ndarray:
    """All frames as DCMTK decodes them (pydicom for what DCMTK has no decoder for)."""
    syntax = str(read_file_meta_info(path).TransferSyntaxUID)
    tool = _DCMTK_DECODER.get(syntax)
    if tool is None:
        return dcmread(path).pixel_array
    out = folder / f"{path.stem}-{tool}.dcm"
    subprocess.run([tool, str(path), str(out)], check=True, capture_output=True)
    return dcmread(out).pixel_array


def item_of(name: str, path: Path, truth: np.ndarray | None) -> Item:
    ds = dcmread(path, stop_before_pixels=True)
    return Item(
        name,
        path,
        str(ds.file_meta.TransferSyntaxUID),
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        number_of_frames(path),
        truth,
    )


def special_classes(folder: Path) -> dict[str, Path]:
    """A retired and a private storage SOP class, and a study UID with leading zeros."""
    out = {}
    for name, sop_class, patient in (
        ("retired-us", RETIRED_US, "USOLD"),
        ("private", PRIVATE_CLASS, "PRIV"),
        ("odd-uid", None, "ODDUID"),
    ):
        ds = make_dataset(Spec(patient, "Real^Files", 1, 1, 1, rows=16))
        if sop_class is not None:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ts.UID(sop_class)
        else:
            ds.StudyInstanceUID = ODD_STUDY
        out[name] = write_dataset(ds, folder)
    return out


def store(srv: RunningServer, paths: Sequence[Path]) -> None:
    statuses = store_files(srv.dicom_port, paths)
    assert {p.name: int(s.Status) for p, s in statuses.items()} == dict.fromkeys(
        [p.name for p in paths], 0
    )


def stow_one(srv: RunningServer, data: bytes) -> httpx.Response:
    boundary = "realfiles"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return httpx.post(
        f"http://127.0.0.1:{srv.http_port}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )


@pytest.fixture(scope="module", autouse=True)
def lenient_pydicom() -> Iterator[None]:
    """Real files break PS3.5 (UIDs with leading zeros): read them as pypacs does."""
    saved = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    yield
    config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    folder = tmp_path_factory.mktemp("real-files")
    items = [item_of(a.name, a.path, a.truth) for a in made(folder)]
    items += [item_of(n, p, dcmtk_truth(p, folder)) for n, p in library_files(folder)]
    broken = item_of("unsplittable", unsplittable(folder), None)
    extras = special_classes(folder)
    config = folder / "pypacs.toml"
    config.write_text(
        f'[remotes.gdcm]\nae_title = "{GDCM_MOVER}"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    )
    by_cstore = start_pypacs(folder / "cstore", "--config", str(config))
    by_stow = start_pypacs(folder / "stow")
    everything = [i.path for i in [*items, broken]] + list(extras.values())
    store(by_cstore, everything)
    for path in everything:
        response = stow_one(by_stow, path.read_bytes())
        assert response.status_code == 200, (path.name, response.text)
    yield Corpus(folder, items, broken, by_cstore, by_stow, extras)
    by_cstore.kill()
    by_stow.kill()


# -- helpers: the doors ------------------------------------------------------------------


def instance_url(srv: RunningServer, item: Item) -> str:
    return (
        f"http://127.0.0.1:{srv.http_port}/dicom-web/studies/{item.study}"
        f"/series/{item.series}/instances/{item.sop_instance}"
    )


def wado(srv: RunningServer, item: Item, accept: str) -> httpx.Response:
    return httpx.get(instance_url(srv, item), headers={"Accept": accept}, timeout=60)


@dataclass
class Received:
    status: int
    counts: tuple[int, int, int]  # completed, failed, warning
    failed_uids: list[str]
    items: dict[str, tuple[str, bytes]]  # SOP Instance UID -> (syntax, dataset bytes)


def c_get(
    port: int, study: str, contexts: Sequence[tuple[str, str]], item: Item | None = None
) -> Received:
    """C-GET of a study (or one instance) by pynetdicom's SCU, proposing each (SOP class,
    transfer syntax) pair as a context of its own, with the SCP role."""
    ae = AE(ae_title="REALGET")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(GET)
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    roles: list[Any] = [build_role(c, scp_role=True) for c in sorted({c for c, _ in contexts})]
    got: dict[str, tuple[str, bytes]] = {}

    def on_store(event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        data = cast(BytesIO, request.DataSet).getvalue()
        got[str(request.AffectedSOPInstanceUID)] = (str(event.context.transfer_syntax), data)
        return 0

    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="PYPACS",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE" if item else "STUDY"
    query.StudyInstanceUID = study
    if item:
        query.SeriesInstanceUID = item.series
        query.SOPInstanceUID = item.sop_instance
    try:
        answers = list(assoc.send_c_get(query, GET))
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    status, identifier = answers[-1]
    value = identifier.get("FailedSOPInstanceUIDList") if identifier else None
    failed = [value] if isinstance(value, str) else list(value or [])
    counts = (
        int(status.NumberOfCompletedSuboperations or 0),
        int(status.NumberOfFailedSuboperations or 0),
        int(status.NumberOfWarningSuboperations or 0),
    )
    return Received(int(status.Status), counts, failed, got)


def assert_whole(ds: Dataset, item: Item) -> None:
    """All frames of ``item``, pixel for pixel (within a unit for lossy JPEG)."""
    assert number_of_frames_of(ds) == item.frames
    assert item.truth is not None
    pixels = ds.pixel_array
    assert pixels.shape == item.truth.shape, item.name
    difference = np.abs(pixels.astype(np.int64) - item.truth.astype(np.int64)).max()
    assert difference <= (2 if item.syntax in _LOSSY else 0), item.name


def number_of_frames_of(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def parse(syntax: str, data: bytes) -> Dataset:
    from pydicom.filereader import read_dataset

    uid = ts.UID(syntax)
    ds = read_dataset(BytesIO(data), uid.is_implicit_VR, uid.is_little_endian)
    ds.file_meta = Dataset()  # type: ignore[assignment]
    ds.file_meta.TransferSyntaxUID = uid
    return ds


# -- as stored ---------------------------------------------------------------------------


@pytest.mark.parametrize("door", ["c-store", "stow"])
def test_as_stored_by_wado_is_byte_identical(corpus: Corpus, door: str) -> None:
    srv = corpus.servers()[door]
    for item in [*corpus.items, corpus.broken]:
        response = wado(srv, item, ANY)
        assert response.status_code == 200, (item.name, response.text)
        (part,) = parts(response)
        assert data_set(part.body) == data_set(item.path.read_bytes()), item.name


@pytest.mark.parametrize("door", ["c-store", "stow"])
def test_as_stored_by_c_get_is_byte_identical(corpus: Corpus, door: str) -> None:
    srv = corpus.servers()[door]
    for item in [*corpus.items, corpus.broken]:
        got = c_get(srv.dicom_port, item.study, [(item.sop_class, item.syntax)], item)
        assert got.status == 0, item.name
        syntax, data = got.items[item.sop_instance]
        assert syntax == item.syntax
        assert data == data_set(item.path.read_bytes()), item.name


# -- decompressed: whole, or refused -------------------------------------------------------


@pytest.mark.parametrize("door", ["c-store", "stow"])
def test_c_get_to_an_uncompressed_only_peer_sends_every_frame(corpus: Corpus, door: str) -> None:
    srv = corpus.servers()[door]
    for item in corpus.items:
        got = c_get(srv.dicom_port, item.study, [(item.sop_class, ELE)], item)
        assert (got.status, got.counts) == (0, (1, 0, 0)), item.name
        syntax, data = got.items[item.sop_instance]
        assert syntax == ELE
        assert_whole(parse(syntax, data), item)


def test_c_get_refuses_what_cannot_be_sent_whole(corpus: Corpus) -> None:
    item = corpus.broken
    got = c_get(corpus.by_cstore.dicom_port, item.study, [(item.sop_class, ELE)], item)
    # C.4.3.1.5: the sub-operation failed, the instance named; nothing shorter was sent.
    assert got.counts == (0, 1, 0)
    assert got.status == 0xA702
    assert got.failed_uids == [item.sop_instance]
    assert got.items == {}


@pytest.mark.parametrize("door", ["c-store", "stow"])
def test_wado_default_syntax_sends_every_frame(corpus: Corpus, door: str) -> None:
    srv = corpus.servers()[door]
    for item in corpus.items:
        response = wado(srv, item, DEFAULT)
        assert response.status_code == 200, (item.name, response.text)
        (part,) = parts(response)
        ds = dcmread(BytesIO(part.body))
        if item.syntax in _LOSSY:  # PS3.18 8.7.3.4: held lossy only, so sent as held
            assert ds.file_meta.TransferSyntaxUID == item.syntax
            assert data_set(part.body) == data_set(item.path.read_bytes())
        else:
            assert ds.file_meta.TransferSyntaxUID == ELE
            assert_whole(ds, item)


def test_wado_refuses_before_any_byte_what_cannot_be_sent_whole(corpus: Corpus) -> None:
    response = wado(corpus.by_cstore, corpus.broken, f"{DEFAULT}; transfer-syntax={ELE}")
    assert response.status_code == 406
    assert "3 frames" in response.json()["error"]["message"]
    frames = httpx.get(instance_url(corpus.by_cstore, corpus.broken) + "/frames/1", timeout=30)
    assert frames.status_code == 406


def test_frames_one_by_one_are_whole(corpus: Corpus) -> None:
    srv = corpus.by_cstore
    for item in corpus.items:
        assert item.truth is not None
        numbers = ",".join(str(n) for n in range(1, item.frames + 1))
        response = httpx.get(
            f"{instance_url(srv, item)}/frames/{numbers}",
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            timeout=60,
        )
        assert response.status_code == 200, (item.name, response.text)
        frames = parts(response)
        assert len(frames) == item.frames, item.name
        truth = item.truth if item.frames > 1 else item.truth[None]
        for n, frame in enumerate(frames):
            want = truth[n]
            got = np.frombuffer(frame.body, dtype=want.dtype.newbyteorder("<")).reshape(want.shape)
            tolerance = 2 if item.syntax in _LOSSY else 0
            assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= tolerance
        beyond = httpx.get(f"{instance_url(srv, item)}/frames/{item.frames + 1}", timeout=30)
        assert beyond.status_code == 404


def test_metadata_and_frames_agree_with_the_file(corpus: Corpus) -> None:
    srv = corpus.by_stow
    for item in corpus.items:
        response = httpx.get(instance_url(srv, item) + "/metadata", timeout=30)
        assert response.status_code == 200
        (meta,) = response.json()
        frames = meta.get("00280008", {}).get("Value", [1])[0]
        assert int(frames) == item.frames, item.name


# -- UIDs --------------------------------------------------------------------------------


def test_non_conforming_uids_are_served_by_every_door(corpus: Corpus, server_factory: Any) -> None:
    srv: RunningServer = server_factory()
    paths = [
        next(i.path for i in corpus.items if i.name == "gdcm-00191113"),
        corpus.extras["odd-uid"],
    ]
    store(srv, paths)
    http = f"http://127.0.0.1:{srv.http_port}/dicom-web"
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        study = str(ds.StudyInstanceUID)
        found = httpx.get(f"{http}/studies", params={"StudyInstanceUID": study}, timeout=30)
        assert found.status_code == 200
        (match,) = found.json()
        url = match["00081190"]["Value"][0]
        assert url.endswith(f"/studies/{study}")
        whole = httpx.get(url, headers={"Accept": ANY}, timeout=30)
        assert whole.status_code == 200
        assert [data_set(p.body) for p in parts(whole)] == [data_set(path.read_bytes())]
        got = c_get(
            srv.dicom_port, study, [(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))]
        )
        assert got.counts == (1, 0, 0)
        assert list(got.items) == [str(ds.SOPInstanceUID)]
        assert httpx.delete(f"{http}/studies/{study}", timeout=30).status_code in (200, 202, 204)
        gone = httpx.get(f"{http}/studies", params={"StudyInstanceUID": study}, timeout=30)
        assert gone.status_code == 204


def test_leading_zero_uids_from_stow_are_served_at_the_urls_qido_gives(
    server_factory: Any, tmp_path: Path
) -> None:
    """PS3.5 9.1 forbids a component's leading zero and devices write them anyway: a study
    STOW-RS stores and QIDO-RS finds is retrieved, described and deleted at the URLs QIDO-RS
    gives, every door judging its UIDs by the one rule of model/uid.py."""
    srv: RunningServer = server_factory()
    ds = make_dataset(Spec("LEADZERO", "Leading^Zero", 1, 1, 1, rows=8))
    study, series, instance = "1.02.3", "1.02.3.04", "1.02.3.04.005"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ts.UID(instance)
    sent = write_dataset(ds, tmp_path).read_bytes()
    stowed = stow_one(srv, sent)
    assert stowed.status_code == 200, stowed.text
    http = f"http://127.0.0.1:{srv.http_port}/dicom-web"
    assert stowed.json()["00081190"]["Value"] == [f"{http}/studies/{study}"]
    found = httpx.get(f"{http}/studies", params={"StudyInstanceUID": study}, timeout=30)
    assert found.status_code == 200, found.text
    (match,) = found.json()
    url = match["00081190"]["Value"][0]
    assert url.endswith(f"/studies/{study}")
    whole = httpx.get(url, headers={"Accept": ANY}, timeout=30)
    assert whole.status_code == 200, whole.text
    assert [data_set(p.body) for p in parts(whole)] == [data_set(sent)]
    one = httpx.get(
        f"{http}/studies/{study}/instances",
        params={"SOPInstanceUID": instance},
        timeout=30,
    )
    assert one.status_code == 200, one.text
    (item,) = one.json()
    instance_url = item["00081190"]["Value"][0]
    assert instance_url.endswith(f"/studies/{study}/series/{series}/instances/{instance}")
    single = httpx.get(instance_url, headers={"Accept": "application/dicom"}, timeout=30)
    assert single.status_code == 200, single.text
    assert data_set(single.content) == data_set(sent)
    metadata = httpx.get(f"{url}/metadata", timeout=30)
    assert metadata.status_code == 200, metadata.text
    (described,) = metadata.json()
    assert [described[tag]["Value"] for tag in ("0020000D", "0020000E", "00080018")] == [
        [study],
        [series],
        [instance],
    ]
    deleted = httpx.delete(url, timeout=30)
    assert deleted.status_code == 204, deleted.text
    gone = httpx.get(f"{http}/studies", params={"StudyInstanceUID": study}, timeout=30)
    assert gone.status_code == 204


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyInstanceUID", "1.2.3/4"),  # a path separator: no URL can name it
        ("SOPInstanceUID", "../../../../tmp/evil"),
        ("SeriesInstanceUID", "1.2.3\x004"),  # a control character
        ("StudyInstanceUID", "1." + "2" * 198),  # 200 characters, over PS3.5's 64
    ],
)
def test_a_uid_no_door_could_serve_is_refused_at_the_door(
    server_factory: Any, tmp_path: Path, keyword: str, value: str
) -> None:
    srv: RunningServer = server_factory()
    ds = make_dataset(Spec("BADUID", "Bad^Uid", 1, 1, 1, rows=8))
    setattr(ds, keyword, value)
    if keyword == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = ts.UID(value)
    path = tmp_path / "bad-uid.dcm"  # not named after the UID: it holds a path
    ds.save_as(path, enforce_file_format=True)
    (status,) = store_files(srv.dicom_port, [path]).values()
    assert int(status.Status) == 0xA900
    assert keyword in str(status.ErrorComment)
    # STOW-RS: the same refusal (PS3.18 Annex I, 409 with the failure reason).
    answer = stow_one(srv, path.read_bytes())
    assert answer.status_code == 409
    (failed,) = answer.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA900]
    found = httpx.get(f"http://127.0.0.1:{srv.http_port}/dicom-web/studies", timeout=30)
    assert found.status_code == 204  # nothing was kept


# -- storage SOP classes -----------------------------------------------------------------


def storescu(port: int, path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", *options, "-aec", "PYPACS", "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        env=NODELAY,
        timeout=60,
    )


def test_retired_and_private_storage_classes_are_stored_and_retrieved(
    corpus: Corpus, server_factory: Any
) -> None:
    srv: RunningServer = server_factory()
    # storescu sends no class it does not know; pynetdicom's SCU sends the private one.
    assert storescu(srv.dicom_port, corpus.extras["retired-us"], "-R").returncode == 0
    store(srv, [corpus.extras["private"]])
    for name in ("retired-us", "private"):
        path = corpus.extras[name]
        ds = dcmread(path, stop_before_pixels=True)
        got = c_get(srv.dicom_port, str(ds.StudyInstanceUID), [(str(ds.SOPClassUID), ELE)])
        assert got.counts == (1, 0, 0), name
        assert got.items[str(ds.SOPInstanceUID)] == (ELE, data_set(path.read_bytes()))


def test_unknown_classes_refused_when_configured(corpus: Corpus, server_factory: Any) -> None:
    srv: RunningServer = server_factory("--accept-unknown-sop-classes", "false")
    assert storescu(srv.dicom_port, corpus.extras["retired-us"], "-R").returncode == 0
    with dimse_association(srv.dicom_port, [(PRIVATE_CLASS, ELE)], ae_title="PRIVSCU") as assoc:
        # PS3.8 Table 9-18: abstract syntax not supported.
        assert not assoc.is_established
        assert [(cx.abstract_syntax, cx.result) for cx in assoc.rejected_contexts] == [
            (PRIVATE_CLASS, 0x03)
        ]


# -- real clients --------------------------------------------------------------------------


@pytest.mark.parametrize("proposal", ["+xw", "+xy", "+xx", "+xs", "+xv", "+xr", "+xe"])
def test_getscu_proposing_compressed_first_gets_the_stored_bytes(
    corpus: Corpus, proposal: str, tmp_path: Path
) -> None:
    ct = next(i for i in corpus.items if i.name == "CT_small.dcm")  # stored Explicit VR LE
    out = tmp_path / "got"
    out.mkdir()
    run = subprocess.run(
        ["getscu", proposal, "-v", "-aec", "PYPACS", "-od", str(out), "-S",
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct.study}",
         "127.0.0.1", str(corpus.by_cstore.dicom_port)],
        capture_output=True, text=True, env=NODELAY, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.findall(r"Completed Suboperations\s*:\s*(\d+)", run.stderr)[-1] == "1"
    (received,) = out.iterdir()
    # Sent as stored: neither refused nor re-encoded. (getscu writes the file itself, so
    # its bytes are compared element by element.)
    assert read_file_meta_info(received).TransferSyntaxUID == ELE
    got, sent = dcmread(received), dcmread(ct.path)
    assert [(e.tag, e.value) for e in got] == [(e.tag, e.value) for e in sent]


def test_gdcmscu_move_completes(corpus: Corpus, tmp_path: Path) -> None:
    made_items = [i for i in corpus.items if i.study == corpus.items[0].study]
    assert len(made_items) == 5
    config = (corpus.folder / "pypacs.toml").read_text()
    port = int(re.search(r"port = (\d+)", config).group(1))  # type: ignore[union-attr]
    out = tmp_path / "moved"
    out.mkdir()
    run = subprocess.run(
        ["gdcmscu", "-D", "--move", "--aetitle", GDCM_MOVER, "--call", "PYPACS",
         "--port-scp", str(port), "--studyroot", "--study",
         "--key", f"0020,000d={made_items[0].study}", "-o", str(out),
         "127.0.0.1", str(corpus.by_cstore.dicom_port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # gdcmscu waits for a pending response after each C-STORE; without one it never ends.
    # (GDCM 3.0.21 then aborts at its own association release, with any SCP: DCMTK's
    # storescp too. So its exit status says nothing; what it received does.)
    text = run.stdout + run.stderr
    completed = re.findall(r"\(0000,1021\) \?\? \(US\) (\d+)", text)
    statuses = re.findall(r"\(0000,0900\) \?\? \(US\) (\d+)", text)
    assert completed[-1] == str(len(made_items)) and statuses[-1] == "0", text[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{i.sop_instance}.dcm" for i in made_items
    )
    lines = wait_for(lambda: association_lines(corpus.by_cstore.log(), GDCM_MOVER))
    assert "1 move" in lines[-1]


def test_an_instance_failing_after_the_status_line_ends_the_body_with_why(
    server_factory: Any, tmp_path: Path
) -> None:
    srv: RunningServer = server_factory()
    broken = unsplittable(tmp_path)
    good = dcmread(made(tmp_path)[0].path)
    good.StudyInstanceUID = dcmread(broken, stop_before_pixels=True).StudyInstanceUID
    store(srv, [write_dataset(good, tmp_path), broken])  # sent in this order
    url = f"http://127.0.0.1:{srv.http_port}/dicom-web/studies/{good.StudyInstanceUID}"
    received = b""
    with httpx.stream("GET", url, headers={"Accept": f"{DEFAULT}; transfer-syntax={ELE}"}) as r:
        assert r.status_code == 200  # the first instance went out whole
        boundary = r.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
        with pytest.raises(httpx.RemoteProtocolError):  # and the connection was cut
            for chunk in r.iter_raw():
                received += chunk
    pieces = received.split(b"--" + boundary.encode())
    assert not received.rstrip().endswith(b"--")  # no closing delimiter
    head, _, body = pieces[2].partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head
    error = json.loads(body.strip())["error"]
    assert error["code"] == "cannot-transcode" and "3 frames" in error["message"]
    first = dcmread(BytesIO(pieces[1].partition(b"\r\n\r\n")[2][:-2]))
    assert first.SOPInstanceUID == good.SOPInstanceUID and first.NumberOfFrames == 4
