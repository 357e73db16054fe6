"""C-STORE from pynetdicom's SCU in each transfer syntax: stored as received, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom import uid
from pydicom.filereader import read_file_meta_info

from dicomgen import Spec, dataset_bytes, write_as
from helpers import SUCCESS, blob_files, blob_path, index_rows, status_of, store_files, tmp_files
from serving import RunningServer

SYNTAXES = [
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.RLELossless,
    uid.JPEG2000Lossless,
]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=[s.keyword for s in SYNTAXES])
def test_store_keeps_transfer_syntax_and_bytes(
    server: RunningServer, tmp_path: Path, syntax: uid.UID
) -> None:
    files = [
        write_as(Spec("TS1", "Syntax^Test", 1, 1, i, rows=32), tmp_path, syntax) for i in (1, 2)
    ]
    assert {str(read_file_meta_info(f).TransferSyntaxUID) for f in files} == {syntax}

    statuses = store_files(server.dicom_port, files)

    assert {path: status_of(status) for path, status in statuses.items()} == dict.fromkeys(
        files, SUCCESS
    )
    rows = {row["sop_instance_uid"]: row for row in index_rows(server.database_url, "instance")}
    assert len(rows) == 2
    for path in files:
        row = rows[read_file_meta_info(path).MediaStorageSOPInstanceUID]
        assert row["transfer_syntax_uid"] == syntax
        blob = blob_path(server.data, row["blob_key"])
        assert read_file_meta_info(blob).TransferSyntaxUID == syntax
        assert row["blob_size"] == blob.stat().st_size
        sent, kept = dataset_bytes(path), dataset_bytes(blob)
        assert len(kept) == len(sent)
        assert hashlib.sha256(kept).hexdigest() == hashlib.sha256(sent).hexdigest()
    assert len(blob_files(server.data)) == 2
    assert tmp_files(server.data) == []
