"""The retrieve client API (net/scu.py) against DCMTK's dcmqrscp and pynetdicom peers."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from pypacs.errors import StoreError
from pypacs.model.levels import InformationModel
from pypacs.net.scu import echo, get, move
from pypacs.remote.export import Progress
from pypacs.remote.registry import Peer, RemoteError

from dicomgen import Spec, dataset_bytes, write
from qrscp import dcmqrscp, free_port
from receiver import receiver

STUDY_ROOT = InformationModel.STUDY_ROOT


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scu-study")
    specs = [Spec("SCU1", "Api^Test", 1, 1, i) for i in (1, 2, 3)]
    specs.append(Spec("SCU1", "Api^Test", 1, 2, 1, modality="MR"))
    return [write(spec, folder) for spec in specs]


def identifier(path: Path) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = dcmread(path, stop_before_pixels=True).StudyInstanceUID
    return ds


def split_part10(data: bytes) -> tuple[Dataset, bytes]:
    """A Part 10 file's meta information and the data set bytes behind it."""
    fp = BytesIO(data)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return meta, fp.read()


def originals(files: list[Path]) -> dict[str, bytes]:
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in files
    }


def remote(port: int, ae_title: str) -> Peer:
    return Peer(name="test", ae_title=ae_title, host="127.0.0.1", port=port)


# pynetdicom 3.0.4 leaks the socket of a refused connection: shutdown() of an unconnected
# socket raises before close() (transport.py _shutdown_socket), then drops the reference.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_echo_succeeds_or_raises(tmp_path: Path) -> None:
    with dcmqrscp(tmp_path) as peer:
        echo(remote(peer.port, "DCMQR"), "SCUTEST")
    with pytest.raises(RemoteError, match="refused or did not answer"):
        echo(remote(free_port(), "NOBODY"), "SCUTEST", timeout=5)


def test_get_hands_over_each_instance_and_answers_its_status(
    tmp_path: Path, study: list[Path]
) -> None:
    arrived: dict[str, tuple[str, Dataset, bytes]] = {}

    def on_instance(data: bytes, sop_class: str, sop_instance: str) -> int:
        meta, body = split_part10(data)
        arrived[sop_instance] = (sop_class, meta, body)
        if sop_class == MRImageStorage:
            raise StoreError("disk full, say")
        return 0x0000

    with dcmqrscp(tmp_path) as peer:
        peer.store(study)
        steps = list(
            get(
                remote(peer.port, "DCMQR"), "SCUTEST", STUDY_ROOT, identifier(study[0]), on_instance
            )
        )

    assert {uid: body for uid, (_, _, body) in arrived.items()} == originals(study)
    for uid, (sop_class, meta, _) in arrived.items():
        assert meta.MediaStorageSOPInstanceUID == uid
        assert meta.MediaStorageSOPClassUID == sop_class
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    mr = next(uid for uid, (cls, _, _) in arrived.items() if cls == MRImageStorage)
    # dcmqrscp answers once per sub-operation, in the order the instances were stored.
    assert steps == [
        Progress(0xFF00, remaining=3, completed=1, failed=0, warning=0),
        Progress(0xFF00, remaining=2, completed=2, failed=0, warning=0),
        Progress(0xFF00, remaining=1, completed=3, failed=0, warning=0),
        Progress(0xFF00, remaining=0, completed=3, failed=1, warning=0),
        Progress(0xB000, None, completed=3, failed=1, warning=0, failed_uids=(mr,)),
    ]
    assert [s.category.value for s in steps] == ["pending"] * 4 + ["warning"]


def test_move_reports_every_response(tmp_path: Path, study: list[Path]) -> None:
    with (
        receiver(ae_title="DEST", syntaxes=[ExplicitVRLittleEndian]) as dest,
        dcmqrscp(tmp_path, {"DEST": dest.port}) as peer,
    ):
        peer.store(study)
        steps = list(
            move(remote(peer.port, "DCMQR"), "SCUTEST", STUDY_ROOT, identifier(study[0]), "DEST")
        )
    assert {r.sop_instance_uid: r.data for r in dest.received} == originals(study)
    assert steps == [
        Progress(0xFF00, remaining=3, completed=1, failed=0, warning=0),
        Progress(0xFF00, remaining=2, completed=2, failed=0, warning=0),
        Progress(0xFF00, remaining=1, completed=3, failed=0, warning=0),
        Progress(0xFF00, remaining=0, completed=4, failed=0, warning=0),
        Progress(0x0000, remaining=None, completed=4, failed=0, warning=0),
    ]
    assert steps[-1].category.value == "success"


def test_get_from_a_peer_without_the_get_service_raises(tmp_path: Path) -> None:
    with receiver(ae_title="STOREONLY") as peer, pytest.raises(RemoteError) as raised:
        next(
            get(
                remote(peer.port, "STOREONLY"),
                "SCUTEST",
                STUDY_ROOT,
                Dataset(),
                lambda data, cls, uid: 0,
            )
        )
    assert str(raised.value) == (
        f"STOREONLY at 127.0.0.1:{peer.port} does not offer C-GET (STUDY_ROOT)"
    )
