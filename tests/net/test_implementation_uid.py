"""Every Part 10 file pypacs writes names pypacs as its implementation (PS3.10 7.1, PS3.7
D.3.3.2): the file an instance received by C-STORE is kept as, the one a bare data set sent
by STOW-RS is kept as, and the one WADO-RS sends transcoded."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pypacs.archive.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

from dicomgen import Spec, make_dataset, write
from dicomweb import CONTENT_TYPE, base, multipart, stored
from helpers import SUCCESS, status_of, store_files
from serving import RunningServer
from wadodata import parts


def _implementation(part10: bytes) -> tuple[str, str]:
    meta = dcmread(BytesIO(part10), stop_before_pixels=True).file_meta
    return str(meta.ImplementationClassUID), str(meta.ImplementationVersionName)


def test_c_store_stow_and_wado_files_name_pypacs(server: RunningServer, tmp_path: Path) -> None:
    pypacs = (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)

    # C-STORE: the data set as received, behind file meta information pypacs writes.
    by_dimse = write(Spec("IMPL", "Impl^Uid", 1, 1, 1), tmp_path)
    (answer,) = store_files(server.dicom_port, [by_dimse]).values()
    assert status_of(answer) == SUCCESS
    dimse_uid = str(make_dataset(Spec("IMPL", "Impl^Uid", 1, 1, 1)).SOPInstanceUID)

    # STOW-RS: a bare data set (no preamble, no meta information) is framed by pypacs.
    bare = make_dataset(Spec("IMPL", "Impl^Uid", 1, 1, 2))
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, bare)
    response = httpx.post(
        f"{base(server)}/studies",
        content=multipart([encoded.getvalue()]),
        headers={"content-type": CONTENT_TYPE},
        timeout=30,
    )
    assert response.status_code == 200, response.text

    blobs = stored(server)
    assert _implementation(blobs[dimse_uid]) == pypacs
    assert _implementation(blobs[str(bare.SOPInstanceUID)]) == pypacs

    # WADO-RS: stored as Explicit VR Little Endian, asked for implicit: transcoded.
    study = str(bare.StudyInstanceUID)
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={ImplicitVRLittleEndian}'
    )
    response = httpx.get(f"{base(server)}/studies/{study}", headers={"accept": accept}, timeout=30)
    assert response.status_code == 200, response.text
    sent = parts(response)
    assert len(sent) == 2
    for part in sent:
        meta = dcmread(BytesIO(part.body), stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == ImplicitVRLittleEndian != ExplicitVRLittleEndian
        assert _implementation(part.body) == pypacs
        assert meta.SourceApplicationEntityTitle == server.ae_title
