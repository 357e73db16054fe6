"""`pypacs echo|get|move` against DCMTK's dcmqrscp, into pypacs, storescp and a test SCP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
)

from dicomgen import Spec, dataset_bytes, make_dataset, write, write_dataset
from helpers import blob_path, index_counts, index_rows, run_pypacs
from qrscp import Qrscp, dcmqrscp, free_port, storescp, storescu
from receiver import receiver
from serving import RunningServer

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"  # not among the 120 classes a C-GET offers
pypacs = run_pypacs


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One study of four instances: three CT in one series, one MR in another."""
    folder = tmp_path_factory.mktemp("retrieve-study")
    specs = [Spec("RET1", "Smith^John", 1, 1, i) for i in (1, 2, 3)]
    specs.append(Spec("RET1", "Smith^John", 1, 2, 1, modality="MR"))
    return [write(spec, folder) for spec in specs]


@pytest.fixture(scope="module")
def other_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second study of the same patient, which no test here asks for."""
    return write(Spec("RET1", "Smith^John", 2, 1, 1), tmp_path_factory.mktemp("retrieve-other"))


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A CT and a Parametric Map instance: the second has no presentation context in a C-GET."""
    folder = tmp_path_factory.mktemp("retrieve-mixed")
    ct = write(Spec("RET2", "Jones^Ann", 1, 1, 1), folder)
    pm = make_dataset(Spec("RET2", "Jones^Ann", 1, 2, 1, modality="OT"))
    pm.SOPClassUID = pm.file_meta.MediaStorageSOPClassUID = UID(PARAMETRIC_MAP)
    return [ct, write_dataset(pm, folder)]


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def study_uid(files: list[Path]) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture
def qr(tmp_path: Path, study: list[Path], other_study: Path) -> Iterator[Qrscp]:
    """dcmqrscp holding both studies, knowing no move destination."""
    with dcmqrscp(tmp_path / "dcmqrscp") as peer:
        peer.store([*study, other_study])
        yield peer


def archived(data: Path, url: str) -> dict[str, bytes]:
    """SOP Instance UID -> the data set bytes of the blob pypacs keeps for it."""
    return {
        row["sop_instance_uid"]: dataset_bytes(blob_path(data, row["blob_key"]))
        for row in index_rows(url, "instance")
    }


def sent(files: list[Path]) -> dict[str, bytes]:
    return {uid_of(path): dataset_bytes(path) for path in files}


# -- echo --------------------------------------------------------------------------------


def test_echo_answers_0_and_2_when_nobody_listens(qr: Qrscp, tmp_path: Path) -> None:
    ok = pypacs("echo", qr.remote, cwd=tmp_path)
    assert (ok.returncode, ok.stdout) == (0, f"DCMQR at 127.0.0.1:{qr.port}: C-ECHO success\n")

    closed = free_port()
    refused = pypacs("echo", f"127.0.0.1:{closed}:NOBODY", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == f"pypacs: NOBODY at 127.0.0.1:{closed} refused or did not answer\n"

    wrong_ae = pypacs("echo", f"127.0.0.1:{qr.port}:WRONG", cwd=tmp_path)
    assert wrong_ae.returncode == 2
    assert "WRONG at 127.0.0.1" in wrong_ae.stderr
    assert "rejected the association" in wrong_ae.stderr


# -- get -----------------------------------------------------------------------------------


def test_get_stores_the_study_as_received_into_the_archive(
    qr: Qrscp, study: list[Path], tmp_path: Path
) -> None:
    data = tmp_path / "archive"
    url = f"sqlite:///{data / 'index.sqlite'}"
    args = ("get", qr.remote, "-k", f"StudyInstanceUID={study_uid(study)}", "--data", str(data))

    first = pypacs(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"new archive {data} (index {url})",
        "retrieved 4 of 4 instances (0 failed, 0 warning)",
    ]
    assert archived(data, url) == sent(study)  # every instance, byte for byte; not study 2
    rows = index_rows(url, "instance")
    assert {row["transfer_syntax_uid"] for row in rows} == {ExplicitVRLittleEndian}
    assert index_counts(url) == {"patient": 1, "study": 1, "series": 2, "instance": 4}

    again = pypacs(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"archive {data} (index {url})",
        "retrieved 4 of 4 instances (0 failed, 0 warning)",
        "4 of them were already in the archive",
    ]
    assert index_rows(url, "instance") == rows


def test_get_at_series_level_with_patient_root(
    qr: Qrscp, study: list[Path], tmp_path: Path
) -> None:
    mr = study[3]
    series = str(dcmread(mr, stop_before_pixels=True).SeriesInstanceUID)
    keys = ["-k", "PatientID=RET1", "-k", f"StudyInstanceUID={study_uid(study)}"]
    out = tmp_path / "out"
    result = pypacs(
        "get",
        qr.remote,
        "-P",
        "-L",
        "SERIES",
        *keys,
        "-k",
        f"SeriesInstanceUID={series}",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "retrieved 1 of 1 instance (0 failed, 0 warning)\n"
    assert [p.name for p in out.iterdir()] == [f"{uid_of(mr)}.dcm"]


def test_get_output_writes_part10_files_named_by_uid(
    qr: Qrscp, study: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out" / "nested"
    result = pypacs(
        "get",
        qr.remote,
        "-k",
        f"StudyInstanceUID={study_uid(study)}",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "retrieved 4 of 4 instances (0 failed, 0 warning)\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{u}.dcm" for u in sent(study))
    for uid, body in sent(study).items():
        written = out / f"{uid}.dcm"
        assert dataset_bytes(written) == body
        meta = pydicom.filereader.read_file_meta_info(written)
        assert meta.MediaStorageSOPInstanceUID == uid
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not (tmp_path / "pypacs-data").exists()  # --output opens no archive


def test_get_partial_failure_names_the_instance_and_exits_1(
    tmp_path: Path, mixed_study: list[Path]
) -> None:
    ct, pm = mixed_study
    data = tmp_path / "archive"
    with dcmqrscp(tmp_path / "dcmqrscp") as peer:
        peer.store(mixed_study)
        result = pypacs(
            "get",
            peer.remote,
            "-k",
            f"StudyInstanceUID={study_uid(mixed_study)}",
            "--data",
            str(data),
            cwd=tmp_path,
        )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"new archive {data} (index sqlite:///{data / 'index.sqlite'})",
        "retrieved 1 of 2 instances (1 failed, 0 warning)",
        f"failed {uid_of(pm)}",
    ]
    assert "C-GET ended with status 0xB000" in result.stderr
    assert archived(data, f"sqlite:///{data / 'index.sqlite'}") == sent([ct])


def test_get_with_progress_bar(qr: Qrscp, study: list[Path], tmp_path: Path) -> None:
    result = pypacs(
        "get",
        qr.remote,
        "-k",
        f"StudyInstanceUID={study_uid(study)}",
        "--progress",
        "--output",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "retrieved: 100%" in result.stderr
    assert "4/4" in result.stderr
    assert "failed=0, warning=0" in result.stderr


# -- a C-GET SCP that sends an instance whose UID is a path ---------------------------------


@pytest.fixture
def lenient_pydicom() -> Iterator[None]:
    """pydicom lets this process build and send a UID that is not one."""
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = saved


@contextmanager
def get_scp(datasets: list[Dataset]) -> Iterator[int]:
    """A pynetdicom C-GET SCP (Study Root) sending ``datasets`` whatever is asked."""
    ae = AE(ae_title="GETSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian, scu_role=True, scp_role=True)

    def on_get(event: evt.Event) -> Iterator[int | tuple[int, Dataset]]:
        yield len(datasets)
        for ds in datasets:
            yield 0xFF00, ds

    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_GET, on_get)]
    )
    assert server is not None
    try:
        yield port
    finally:
        server.shutdown()


@pytest.mark.usefixtures("lenient_pydicom")
def test_get_output_never_uses_a_uid_that_is_not_one_as_a_path(tmp_path: Path) -> None:
    good = make_dataset(Spec("RET3", "Path^Safe", 1, 1, 1))
    evil = make_dataset(Spec("RET3", "Path^Safe", 1, 1, 2))
    evil.SOPInstanceUID = evil.file_meta.MediaStorageSOPInstanceUID = UID("../../escaped")
    out = tmp_path / "a" / "out"
    with get_scp([good, evil]) as port:
        result = pypacs(
            "get",
            f"127.0.0.1:{port}:GETSCP",
            "-k",
            "StudyInstanceUID=1.2.3",
            "--output",
            str(out),
            cwd=tmp_path,
        )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "retrieved 1 of 2 instances (1 failed, 0 warning)",
        "failed ../../escaped",
    ]
    assert [p.name for p in out.iterdir()] == [f"{good.SOPInstanceUID}.dcm"]
    assert [p for p in tmp_path.rglob("*escaped*")] == []
    assert dcmread(out / f"{good.SOPInstanceUID}.dcm").PatientName == "Path^Safe"


# -- move ----------------------------------------------------------------------------------


def test_move_to_a_running_pypacs_by_its_own_ae_title(
    server_factory: Callable[..., RunningServer],
    study: list[Path],
    other_study: Path,
    tmp_path: Path,
) -> None:
    target = server_factory()
    with dcmqrscp(tmp_path / "dcmqrscp", {"PYPACS": target.dicom_port}) as peer:
        peer.store([*study, other_study])
        result = pypacs(
            "move", peer.remote, "-k", f"StudyInstanceUID={study_uid(study)}", cwd=tmp_path
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "moved 4 of 4 instances (0 failed, 0 warning)\n"
    assert archived(target.data, target.database_url) == sent(study)


def test_third_party_move_to_storescp_is_byte_identical(
    tmp_path: Path, study: list[Path], other_study: Path
) -> None:
    received = tmp_path / "storescp"
    with (
        storescp(received, "STORESCP") as port,
        dcmqrscp(tmp_path / "dcmqrscp", {"STORESCP": port}) as peer,
    ):
        peer.store([*study, other_study])
        result = pypacs(
            "move",
            peer.remote,
            "--dest",
            "STORESCP",
            "-k",
            f"StudyInstanceUID={study_uid(study)}",
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "moved 4 of 4 instances (0 failed, 0 warning)\n"
    assert sent(list(received.iterdir())) == sent(study)


def test_move_partial_failure_exits_1_and_names_the_failed_instance(
    tmp_path: Path, study: list[Path]
) -> None:
    mr = uid_of(study[3])
    with (
        receiver(
            ae_title="DEST",
            syntaxes=[ExplicitVRLittleEndian],  # as sent, so the bytes compare
            status_for=lambda uid, n: 0xA700 if uid == mr else 0,
        ) as dest,
        dcmqrscp(tmp_path / "dcmqrscp", {"DEST": dest.port}) as peer,
    ):
        peer.store(study)
        result = pypacs(
            "move",
            peer.remote,
            "--dest",
            "DEST",
            "--ae-title",
            "MOVER",
            "-k",
            f"StudyInstanceUID={study_uid(study)}",
            cwd=tmp_path,
        )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "moved 3 of 4 instances (1 failed, 0 warning)",
        f"failed {mr}",
    ]
    assert "C-MOVE ended with status 0xB000" in result.stderr
    # All four arrived as sent; the receiver answered the MR with 0xA700.
    assert {r.sop_instance_uid: r.data for r in dest.received} == sent(study)
    assert {r.move_originator for r in dest.received} == {"MOVER"}


def test_move_to_an_unknown_destination_exits_2(
    qr: Qrscp, study: list[Path], tmp_path: Path
) -> None:
    result = pypacs(
        "move",
        qr.remote,
        "--dest",
        "NOBODY",
        "-k",
        f"StudyInstanceUID={study_uid(study)}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == "moved 0 of 0 instances (0 failed, 0 warning)\n"
    assert result.stderr == (
        "pypacs: C-MOVE ended with status 0xA801 (refused: move destination unknown)\n"
    )


def test_move_of_nothing_matching_is_success(qr: Qrscp, tmp_path: Path) -> None:
    result = pypacs("move", qr.remote, "-k", "StudyInstanceUID=1.2.3.4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "moved 0 of 0 instances (0 failed, 0 warning)\n"


# -- pypacs as the remote: its C-GET and C-MOVE provider --------------------------------------


def test_get_from_a_second_pypacs_into_the_archive(
    server_factory: Callable[..., RunningServer],
    study: list[Path],
    other_study: Path,
    tmp_path: Path,
) -> None:
    source = server_factory()
    storescu(source.dicom_port, "PYPACS", [*study, other_study])
    data = tmp_path / "archive"
    result = pypacs(
        "get",
        f"127.0.0.1:{source.dicom_port}:PYPACS",
        "--ae-title",
        "GETTER",
        "-k",
        f"StudyInstanceUID={study_uid(study)}",
        "--data",
        str(data),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"new archive {data} (index sqlite:///{data / 'index.sqlite'})",
        "retrieved 4 of 4 instances (0 failed, 0 warning)",
    ]
    assert archived(data, f"sqlite:///{data / 'index.sqlite'}") == sent(study)


def test_third_party_move_from_one_pypacs_to_another(
    server_factory: Callable[..., RunningServer],
    study: list[Path],
    other_study: Path,
    tmp_path: Path,
) -> None:
    target = server_factory("--ae-title", "PYPACS2")
    config = tmp_path / "source.toml"
    config.write_text(
        f'[remotes.two]\nae_title = "PYPACS2"\nhost = "127.0.0.1"\nport = {target.dicom_port}\n'
    )
    source = server_factory("--config", str(config))
    storescu(source.dicom_port, "PYPACS", [*study, other_study])
    result = pypacs(
        "move",
        f"127.0.0.1:{source.dicom_port}:PYPACS",
        "--dest",
        "PYPACS2",
        "--ae-title",
        "MOVER",
        "-k",
        f"StudyInstanceUID={study_uid(study)}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "moved 4 of 4 instances (0 failed, 0 warning)\n"
    assert archived(target.data, target.database_url) == sent(study)


# -- wrong input: one line, exit 2, nothing stored ------------------------------------------


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["get", "nowhere", "-k", "StudyInstanceUID=1"], "unknown remote 'nowhere'"),
        (["move", "nowhere", "-k", "StudyInstanceUID=1"], "unknown remote 'nowhere'"),
        (["echo", "nowhere"], "unknown remote 'nowhere'"),
        (["get", "{qr}", "-k", "NoSuchKeyword=1"], "not a DICOM keyword or gggg,eeee tag"),
        (["move", "{qr}", "-k", "00100020"], "not a DICOM keyword or gggg,eeee tag"),
        (
            ["get", "{qr}", "-L", "PATIENT", "-k", "PatientID=RET1"],
            "level 'PATIENT' is not one of STUDY_ROOT's levels (STUDY, SERIES, IMAGE)",
        ),
        (
            ["move", "{qr}", "-O", "-L", "SERIES", "-k", "PatientID=RET1"],
            "level 'SERIES' is not one of PATIENT_STUDY_ONLY's levels (PATIENT, STUDY)",
        ),
        (
            ["move", "{qr}", "--dest", "A\\B", "-k", "StudyInstanceUID=1"],
            "--dest 'A\\\\B': expected an AE title",
        ),
    ],
)
def test_wrong_arguments_exit_2_with_one_line(
    qr: Qrscp, tmp_path: Path, command: list[str], message: str
) -> None:
    data = tmp_path / "archive"
    args = [part.replace("{qr}", qr.remote) for part in command]
    result = pypacs(*args, *(["--data", str(data)] if args[0] == "get" else []), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not data.exists()


def test_unreachable_remote_exits_2_and_stores_nothing(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    closed = free_port()
    for command in (["get", "--data", str(data)], ["move"]):
        result = pypacs(
            *command, f"127.0.0.1:{closed}:NOBODY", "-k", "StudyInstanceUID=1", cwd=tmp_path
        )
        assert result.returncode == 2
        # get names the archive it opened (made: --data names it) before it asks the remote
        announced = f"new archive {data} (index sqlite:///{data / 'index.sqlite'})\n"
        assert result.stdout == (announced if command[0] == "get" else "")
        assert result.stderr == f"pypacs: NOBODY at 127.0.0.1:{closed} refused or did not answer\n"
    assert index_counts(f"sqlite:///{data / 'index.sqlite'}") == dict.fromkeys(
        ("patient", "study", "series", "instance"), 0
    )
