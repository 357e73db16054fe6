"""The C-FIND fixture set and the SCU helpers shared by ``tests/net/test_find_*.py``.

The set is made so that a wrong answer shows: names in mixed case and with three component
groups, three character sets, identifiers holding ``%``, ``_`` and look-alike decoys, dates
and times on range bounds (with fractions), a study lacking optional values, a study with
CT, MR and SR series, patients with several studies. Expected answers in the tests are
written from these definitions, never read back from pypacs.

Labels name entities in the tests: a study ``"john1"``, its series ``"john1/2"`` (series
number 2), that series' instance ``"john1/2/1"`` (instance number 1); patients by PatientID.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    BasicTextSRStorage,
    CTImageStorage,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SOPClassExtendedNegotiation,
)
from pynetdicom.presentation import build_context

from dicomgen import Spec, make_dataset, uid, write_dataset
from helpers import status_of, store_files
from serving import RunningServer, start_pypacs

PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_STUDY_ONLY = "1.2.840.10008.5.1.4.1.2.3.1"

# PS3.4 C.4.1.1.4 (C-FIND statuses) and PS3.7 C.4 (Failure statuses).
PENDING = 0xFF00
PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01
SUCCESS = 0x0000
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900

# PS3.4 C.5.1.1: SOP Class Extended Negotiation, byte 0 relational queries, byte 1 combined
# date-time matching.
RELATIONAL = b"\x01"
RELATIONAL_COMBINED = b"\x01\x01"

_UID_ROOT = 7001  # first UID component of this set, apart from other tests' data


# -- the fixture set -------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesDef:
    modality: str
    instances: int
    description: str
    date: str | None = None  # SeriesDate; the study's date when None
    time: str | None = None  # SeriesTime; the study's time when None


@dataclass(frozen=True)
class StudyDef:
    label: str
    date: str
    time: str
    accession: str
    description: str | None
    series: tuple[SeriesDef, ...]
    referring: str | None = "Doe^Ref"
    age: str = "030Y"  # PatientAge, kept at the study level, no index column
    admitting: str | None = None  # AdmittingDiagnosesDescription, no index column
    procedures: tuple[tuple[str, str], ...] = ()  # ProcedureCodeSequence (value, scheme)


@dataclass(frozen=True)
class PatientDef:
    patient_id: str
    name: str
    sex: str
    birth_date: str
    studies: tuple[StudyDef, ...]
    charset: str | None = None
    comments: str | None = None  # PatientComments, no index column


def _one(modality: str, description: str = "Axial") -> tuple[SeriesDef, ...]:
    return (SeriesDef(modality, 1, description),)


PATIENTS: tuple[PatientDef, ...] = (
    PatientDef(
        "PAT-JOHN",
        "Smith^John",
        "M",
        "19600101",
        comments="likes tea",
        studies=(
            StudyDef(
                "john1",
                "20240101",
                "000000",
                "A_1%",
                "Chest CT",
                series=(
                    SeriesDef("CT", 3, "Axial 1mm", "20240101", "000010"),
                    SeriesDef("MR", 2, "sag t2", "20240102", "101500.25"),
                    SeriesDef("SR", 1, "Report", "20240103", "235959.999999"),
                ),
                age="063Y",
                admitting="Fracture of rib",
                procedures=(("CHEST01", "99TEST"), ("ABD02", "99TEST")),
            ),
            # No StudyDescription, no ReferringPhysicianName.
            StudyDef(
                "john2",
                "20240131",
                "235959.999999",
                "AX1%",
                None,
                _one("CT", "Scout"),
                referring=None,
                age="064Y",
            ),
        ),
    ),
    PatientDef(
        "PAT-JANE",
        "SMITH^JANE",
        "F",
        "19650202",
        comments="Likes coffee",
        studies=(
            StudyDef(
                "jane1",
                "20240201",
                "101500.25",
                "A_1X",
                "Head MR",
                (SeriesDef("MR", 2, "ax t1"),),
                referring="Roe^Ref",
                age="058Y",
                procedures=(("HEAD01", "99TEST"),),
            ),
            StudyDef("jane2", "20240215", "101500.2", "ACC-J2", "chest CT", _one("CT"), age="058Y"),
        ),
    ),
    PatientDef(
        "PAT-BOB",
        "smithers^bob",
        "M",
        "19651231",
        (StudyDef("bob1", "20231231", "235959", "ACC-B1", "Knee", _one("MR", "knee pd")),),
    ),
    PatientDef(
        "50%_OFF",
        "Percent^Pat",
        "F",
        "19800101",
        (StudyDef("pct1", "20240115", "080000", "ACC-P1", "Percent", _one("CT")),),
    ),
    # Decoys: "%" and "_" taken as SQL wildcards would match these.
    PatientDef(
        "50X_OFF",
        "Decoy^Percent",
        "M",
        "19800101",
        (StudyDef("dec1", "20240115", "120000", "ACC-D1", "Decoy percent", _one("CT")),),
    ),
    PatientDef(
        "50%XOFF",
        "Decoy^Underscore",
        "M",
        "19800101",
        (StudyDef("und1", "20240116", "120000", "ACC-U1", "Decoy underscore", _one("CT")),),
    ),
    PatientDef(
        "PAT-MUELLER",
        "Müller^Jürgen",
        "M",
        "19800101",
        (
            StudyDef(
                "mue1",
                "20240110",
                "090000",
                "ACC-M1",
                "Schädel",
                _one("CT"),
                admitting="Rib fracture",
                procedures=(("HEAD01", "99OTHER"),),
            ),
        ),
        charset="ISO_IR 100",
    ),
    PatientDef(
        "PAT-NONO",
        "Ñoño^José",
        "M",
        "19800101",
        (StudyDef("non1", "20240111", "140000", "ACC-N1", "Tórax", _one("MR", "cor")),),
        charset="ISO_IR 192",
    ),
    PatientDef(
        "PAT-YAMADA",
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "M",
        "19800101",
        (StudyDef("yam1", "20240131", "101500.25", "ACC-Y1", "Head", _one("CT")),),
        charset="\\ISO 2022 IR 87",
    ),
)


@dataclass(frozen=True)
class _Entities:
    """Lookups derived from PATIENTS: labels ↔ UIDs, and who belongs to whom."""

    study_uid: dict[str, str] = field(default_factory=dict)
    series_uid: dict[str, str] = field(default_factory=dict)
    instance_uid: dict[str, str] = field(default_factory=dict)
    label_of: dict[str, str] = field(default_factory=dict)
    study: dict[str, StudyDef] = field(default_factory=dict)
    patient_of: dict[str, PatientDef] = field(default_factory=dict)


def _entities() -> _Entities:
    e = _Entities()
    for p, patient in enumerate(PATIENTS, start=1):
        for s, study in enumerate(patient.studies, start=1):
            e.study_uid[study.label] = uid(_UID_ROOT, p, s)
            e.study[study.label] = study
            e.patient_of[study.label] = patient
            for n, series in enumerate(study.series, start=1):
                e.series_uid[f"{study.label}/{n}"] = uid(_UID_ROOT, p, s, n)
                for i in range(1, series.instances + 1):
                    e.instance_uid[f"{study.label}/{n}/{i}"] = uid(_UID_ROOT, p, s, n, i)
    for table in (e.study_uid, e.series_uid, e.instance_uid):
        e.label_of.update({v: k for k, v in table.items()})
    return e


ENTITIES = _entities()
STUDY_UID = ENTITIES.study_uid
SERIES_UID = ENTITIES.series_uid
INSTANCE_UID = ENTITIES.instance_uid
STUDY = ENTITIES.study
PATIENT_OF = ENTITIES.patient_of
ALL_STUDIES: tuple[str, ...] = tuple(STUDY_UID)
ALL_PATIENTS: tuple[str, ...] = tuple(p.patient_id for p in PATIENTS)
PATIENT = {p.patient_id: p for p in PATIENTS}

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage, "SR": BasicTextSRStorage}
_IMAGE_ONLY = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
)


def code_item(value: str, scheme: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = f"code {value}"
    return item


def _instance(patient: PatientDef, study: StudyDef, number: int, instance: int) -> Dataset:
    series = study.series[number - 1]
    label = f"{study.label}/{number}/{instance}"
    ds = make_dataset(Spec(patient.patient_id, patient.name, 1, number, instance, rows=2))
    if patient.charset:
        ds.SpecificCharacterSet = patient.charset
    ds.PatientSex, ds.PatientBirthDate = patient.sex, patient.birth_date
    if patient.comments:
        ds.PatientComments = patient.comments
    ds.StudyInstanceUID = STUDY_UID[study.label]
    ds.StudyDate, ds.StudyTime = study.date, study.time
    ds.AccessionNumber, ds.StudyID = study.accession, study.label.upper()
    ds.PatientAge = study.age
    for keyword, value in (
        ("StudyDescription", study.description),
        ("ReferringPhysicianName", study.referring),
        ("AdmittingDiagnosesDescription", study.admitting),
    ):
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if study.procedures:
        ds.ProcedureCodeSequence = [code_item(v, s) for v, s in study.procedures]
    ds.SeriesInstanceUID = SERIES_UID[f"{study.label}/{number}"]
    ds.Modality, ds.SeriesDescription = series.modality, series.description
    ds.SeriesDate = series.date or study.date
    ds.SeriesTime = series.time or study.time
    ds.SOPInstanceUID = INSTANCE_UID[label]
    ds.SOPClassUID = _SOP_CLASS[series.modality]
    ds.AcquisitionNumber = instance  # IS without an index column: matched over attributes
    ds.ContentDate = f"202401{instance:02d}"
    ds.ImageComments = f"slice {instance} of {series.instances}"
    if series.modality == "SR":
        for keyword in _IMAGE_ONLY:
            delattr(ds, keyword)
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def fixture_datasets() -> Iterator[Dataset]:
    """Every instance of the fixture set."""
    for patient in PATIENTS:
        for study in patient.studies:
            for number, series in enumerate(study.series, start=1):
                for instance in range(1, series.instances + 1):
                    yield _instance(patient, study, number, instance)


def serve_datasets(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *flags: str,
    datasets: Iterable[Dataset] | None = None,
) -> RunningServer:
    """A pypacs server (started with ``flags``) holding ``datasets``, by default the set."""
    root = tmp_path_factory.mktemp(name)
    folder = root / "in"
    folder.mkdir()
    files = [write_dataset(ds, folder) for ds in (datasets or fixture_datasets())]
    srv = start_pypacs(root / "data", *flags)
    try:
        statuses = store_files(srv.dicom_port, files)
        refused = {p.name: status_of(s) for p, s in statuses.items() if status_of(s) != "0x0000"}
        assert not refused, refused
    except BaseException:
        srv.kill()
        raise
    return srv


# -- counts derived from the definitions -----------------------------------------------------


def study_counts(label: str) -> tuple[int, int]:
    """(NumberOfStudyRelatedSeries, NumberOfStudyRelatedInstances)."""
    study = STUDY[label]
    return len(study.series), sum(s.instances for s in study.series)


def patient_counts(patient: PatientDef) -> tuple[int, int, int]:
    """(NumberOfPatientRelated Studies, Series, Instances)."""
    studies = [study_counts(s.label) for s in patient.studies]
    return len(studies), sum(n for n, _ in studies), sum(n for _, n in studies)


def modalities(label: str) -> list[str]:
    return sorted({s.modality for s in STUDY[label].series})


# -- the SCU ---------------------------------------------------------------------------------


def element(keyword: str, value: object) -> DataElement:
    """A query key as given, valid for its VR or not (queries carry wildcards and ranges
    that pydicom's value validation would warn about, and some tests send bad values)."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return DataElement(tag, dictionary_VR(tag), value, validation_mode=pydicom_config.IGNORE)


def identifier(
    keys: Mapping[str, object], level: str | None = "STUDY", charset: str | None = None
) -> Dataset:
    """A C-FIND identifier; ISO_IR 192 is declared when a value is not ASCII and no
    ``charset`` is given."""
    ds = Dataset()
    texts = [v for v in keys.values() if isinstance(v, str)]
    if charset is None and not all(t.isascii() for t in texts):
        charset = "ISO_IR 192"
    if charset is not None:
        ds.add(element("SpecificCharacterSet", charset))
    if level is not None:
        ds.add(element("QueryRetrieveLevel", level))
    for keyword, value in keys.items():
        ds.add(element(keyword, value))
    return ds


@contextmanager
def qr_association(
    port: int,
    model: str,
    ext: bytes | None = None,
    *,
    also: tuple[str, ...] = (),
    ae_title: str = "FINDTEST",
) -> Iterator[Association]:
    """An association proposing a Query/Retrieve FIND model, with SOP Class Extended
    Negotiation ``ext`` for it when given, and the models ``also`` without; released on
    leaving."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    for sop_class in (model, *also):
        ae.add_requested_context(sop_class)
    negotiation: list[Any] = []
    if ext is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = model
        item.service_class_application_information = ext
        negotiation.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="PYPACS", ext_neg=negotiation)
    assert assoc.is_established, "association refused"
    transport = assoc.dul.socket
    if transport is not None and transport.socket is not None:
        # Without it each small PDU waits for the peer's delayed ACK (~40 ms on loopback).
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


@dataclass
class Answer:
    """What a C-FIND brought back: the pending identifiers and the final status."""

    responses: list[Dataset]
    final: Dataset
    pending: list[int]  # the status of each pending response

    @property
    def status(self) -> int:
        return int(self.final.Status) if "Status" in self.final else -1


def send_find(assoc: Association, ident: Dataset, model: str, *, msg_id: int = 1) -> Answer:
    answer = Answer([], Dataset(), [])
    for status, ds in assoc.send_c_find(ident, model, msg_id=msg_id):
        code = int(status.Status) if "Status" in status else -1
        if code in (PENDING, PENDING_OPTIONAL_KEYS_UNSUPPORTED):
            assert ds is not None
            answer.responses.append(ds)
            answer.pending.append(code)
        else:
            answer.final = status
    return answer


def find(
    port: int,
    keys: Mapping[str, object],
    *,
    level: str | None = "STUDY",
    model: str = STUDY_ROOT,
    ext: bytes | None = None,
    charset: str | None = None,
) -> Answer:
    """One C-FIND over its own association."""
    with qr_association(port, model, ext) as assoc:
        return send_find(assoc, identifier(keys, level, charset), model)


# -- reading answers -------------------------------------------------------------------------


def _labels(responses: list[Dataset], keyword: str) -> list[str]:
    values = [str(r.get(keyword, "<missing>")) for r in responses]
    return sorted(ENTITIES.label_of.get(v, v) for v in values)


def studies(responses: list[Dataset]) -> list[str]:
    """Study labels of the responses, sorted, duplicates kept."""
    return _labels(responses, "StudyInstanceUID")


def series(responses: list[Dataset]) -> list[str]:
    return _labels(responses, "SeriesInstanceUID")


def instances(responses: list[Dataset]) -> list[str]:
    return _labels(responses, "SOPInstanceUID")


def patients(responses: list[Dataset]) -> list[str]:
    return sorted(str(r.get("PatientID", "<missing>")) for r in responses)


def by_label(responses: list[Dataset]) -> dict[str, Dataset]:
    """Study-level responses keyed by study label."""
    return {ENTITIES.label_of.get(str(r.StudyInstanceUID), "?"): r for r in responses}


# -- DCMTK -----------------------------------------------------------------------------------


@dataclass
class FindscuRun:
    responses: list[Dataset]
    output: str
    returncode: int


def findscu(
    port: int, model_flag: str, keys: Sequence[str | bytes], out: Path, *options: str
) -> FindscuRun:
    """Run DCMTK's findscu with ``-k`` keys; responses read from its ``--extract`` files."""
    command: list[str | bytes] = ["findscu", "-v", model_flag, "-aet", "FINDSCU"]
    command += ["-aec", "PYPACS", "--extract", "-od", str(out), *options]
    for key in keys:
        command += ["-k", key]
    command += ["127.0.0.1", str(port)]
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        command,
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    responses: list[Dataset] = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return FindscuRun(responses, output, proc.returncode)


# -- a requestor that reads only when told -----------------------------------------------------


class RawFindClient:
    """A bare association over a plain socket, so that a test decides when responses are
    read (pynetdicom's own requestor reads everything as it arrives, in its own thread).
    PDUs and DIMSE messages are encoded with pynetdicom's classes; one presentation
    context (id 1, Implicit VR Little Endian)."""

    CONTEXT_ID = 1
    MAX_PDU = 16382

    def __init__(self, port: int, sop_class: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = A_ASSOCIATE()
        request.application_context_name = "1.2.840.10008.3.1.1.1"
        request.calling_ae_title = "RAWFIND"
        request.called_ae_title = "PYPACS"
        context = build_context(sop_class, [ImplicitVRLittleEndian])
        context.context_id = self.CONTEXT_ID
        request.presentation_context_definition_list = [context]
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.MAX_PDU
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = PYDICOM_IMPLEMENTATION_UID
        request.user_information = [max_length, implementation]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(request)
        self.sock.sendall(pdu.encode())
        kind, _ = self._read_pdu()
        assert kind == 0x02, f"association not accepted (PDU type {kind:#x})"
        self._items: list[tuple[int, bytes]] = []  # (control header, fragment) not yet used

    def close(self) -> None:
        """A-RELEASE (PS3.8 9.3.6), then close the socket."""
        try:
            self.sock.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            while self._read_pdu()[0] != 0x06:
                pass
        finally:
            self.sock.close()

    def _recv(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            data += chunk
        return bytes(data)

    def _read_pdu(self) -> tuple[int, bytes]:
        header = self._recv(6)
        return header[0], self._recv(int.from_bytes(header[2:6], "big"))

    def _pdus(self, primitive: C_FIND | C_CANCEL) -> bytes:
        message = C_FIND_RQ() if isinstance(primitive, C_FIND) else C_CANCEL_RQ()
        message.primitive_to_message(primitive)
        encoded = b""
        for pdata in message.encode_msg(self.CONTEXT_ID, self.MAX_PDU):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            encoded += pdu.encode()
        return encoded

    @staticmethod
    def _find(ident: Dataset, sop_class: str, msg_id: int) -> C_FIND:
        request = C_FIND()
        request.MessageID = msg_id
        request.AffectedSOPClassUID = sop_class
        request.Priority = 2
        request.Identifier = BytesIO(encode(ident, True, True) or b"")
        return request

    @staticmethod
    def _cancel(msg_id: int) -> C_CANCEL:
        request = C_CANCEL()
        request.MessageIDBeingRespondedTo = msg_id
        return request

    def send_find(self, ident: Dataset, sop_class: str, msg_id: int) -> None:
        self.sock.sendall(self._pdus(self._find(ident, sop_class, msg_id)))

    def send_cancel(self, msg_id: int) -> None:
        self.sock.sendall(self._pdus(self._cancel(msg_id)))

    def send_find_then_cancel(self, ident: Dataset, sop_class: str, msg_id: int) -> None:
        """The C-FIND-RQ and its C-CANCEL-RQ in one write (PS3.7 9.3.2.3 lets an SCU
        cancel any time after the request)."""
        find = self._pdus(self._find(ident, sop_class, msg_id))
        self.sock.sendall(find + self._pdus(self._cancel(msg_id)))

    def _message_part(self, command: bool) -> bytes:
        """The bytes of the next command set (or data set), read fragment by fragment."""
        data = bytearray()
        while True:
            while not self._items:
                kind, body = self._read_pdu()
                assert kind == 0x04, f"expected P-DATA-TF, got PDU type {kind:#x}"
                offset = 0
                while offset < len(body):
                    length = int.from_bytes(body[offset : offset + 4], "big")
                    header = body[offset + 5]
                    self._items.append((header, body[offset + 6 : offset + 4 + length]))
                    offset += 4 + length
            header, fragment = self._items.pop(0)
            assert bool(header & 0x01) == command, "command and data set fragments mixed"
            data += fragment
            if header & 0x02:  # last fragment
                return bytes(data)

    def read_response(self) -> tuple[int, Dataset | None]:
        """The next C-FIND-RSP: its status and identifier (None when there is none)."""
        command = read_dataset(BytesIO(self._message_part(command=True)), True, True)
        ident = None
        if int(command.CommandDataSetType) != 0x0101:  # PS3.7 E.1: 0x0101 is "no data set"
            ident = read_dataset(BytesIO(self._message_part(command=False)), True, True)
        return int(command.Status), ident
