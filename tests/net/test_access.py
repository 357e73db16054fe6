"""Access rules on the DICOM port, on a running server: who may associate (called AE title,
calling AE title, the host a remote must call from) and which services each caller may use
(``[remotes.NAME] allow``, ``[access] unknown_callers``), against DCMTK's tools, pynetdicom
and our own requestor; each refusal logged with the AE titles and the address."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pypacs.config import defaults
from pypacs.model.access import ALL_SERVICES, Service
from pypacs.net import dimse, pdu
from pypacs.net.access import AccessPolicy, HostAddresses, service_of
from pypacs.net.identifier import encode_identifier
from pypacs.remote.registry import Peer, Peers

from dicomgen import Spec, dataset_bytes, study_uid, write
from helpers import index_rows, run_pypacs, wait_for
from qrscp import storescp
from rawpeer import raw, read_pdu, requestor, rq_bytes
from serving import RunningServer, start_pypacs

NODELAY = {**os.environ, "TCP_NODELAY": "1"}
FIND = StudyRootQueryRetrieveInformationModelFind
MOVE = StudyRootQueryRetrieveInformationModelMove
EXPLICIT = uid.ExplicitVRLittleEndian
STUDY = study_uid("ACC1", 1)
NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C: Refused, Not Authorized
USER_REJECTION = 1  # PS3.8 9.3.3.2, a presentation context's result
# PS3.8 9.3.4: result rejected-permanent (1), source service-user (1), and the reason.
CALLING_NOT_RECOGNIZED = (1, 1, 3)
CALLED_NOT_RECOGNIZED = (1, 1, 7)


@dataclass
class Guarded:
    """A server with a remote per rule, one stored instance, and a storescp to move to."""

    server: RunningServer
    received: Path
    instance: Path


def remote(name: str, title: str, *lines: str, host: str = "127.0.0.1", port: int = 104) -> str:
    body = "\n".join((f'ae_title = "{title}"', f'host = "{host}"', f"port = {port}", *lines))
    return f"[remotes.{name}]\n{body}\n"


def start(folder: Path, config: str) -> RunningServer:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pypacs.toml"
    path.write_text(config)
    return start_pypacs(folder / "data", "--config", str(path))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    folder = tmp_path_factory.mktemp("access")
    received = folder / "received"
    with storescp(received) as dest_port:
        srv = start(
            folder,
            '[access]\nunknown_callers = ["echo", "find"]\n'
            + remote("known", "KNOWN")
            + remote("nomove", "NOMOVE", 'allow = ["echo", "find", "store"]')
            + remote("nostore", "NOSTORE", 'allow = ["echo", "find"]')
            + remote("hosted", "HOSTED", "check_host = true", host="127.0.0.2")
            + remote("nothing", "NOTHING", "allow = []")
            + remote("dest", "STORESCP", port=dest_port),
        )
        try:
            instance = write(Spec("ACC1", "Access^One", 1, 1, 1), folder)
            stored = dcmtk("storescu", srv, "KNOWN", str(instance))
            assert stored.returncode == 0, stored.stderr
            assert len(index_rows(srv.database_url, "instance")) == 1
            yield Guarded(srv, received, instance)
        finally:
            srv.kill()


def dcmtk(
    tool: str, srv: RunningServer, calling: str, *options: str, called: str = "PYPACS"
) -> subprocess.CompletedProcess[str]:
    """A DCMTK tool run as ``calling`` against the server (its files, if any, last)."""
    flags = [o for o in options if not o.endswith(".dcm")]
    files = [o for o in options if o.endswith(".dcm")]
    command = [tool, "-aet", calling, "-aec", called, *flags, "127.0.0.1", str(srv.dicom_port)]
    return subprocess.run(
        [*command, *files], capture_output=True, text=True, env=NODELAY, timeout=60
    )


def find_study(srv: RunningServer, calling: str) -> subprocess.CompletedProcess[str]:
    return dcmtk(
        "findscu", srv, calling, "-v", "-S", "-k", "QueryRetrieveLevel=STUDY",
        "-k", "StudyInstanceUID",
    )  # fmt: skip


def move_study(srv: RunningServer, calling: str) -> subprocess.CompletedProcess[str]:
    return dcmtk(
        "movescu", srv, calling, "-v", "-S", "-aem", "STORESCP",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
    )  # fmt: skip


def rejection(port: int, **changes: object) -> tuple[int, int, int]:
    """The (result, source, reason) of the A-ASSOCIATE-RJ answering a Verification RQ."""
    with raw(port) as sock:
        sock.sendall(rq_bytes(**changes))
        pdu_type, body = read_pdu(sock)
    assert pdu_type == pdu.ASSOCIATE_RJ, (pdu_type, body)
    rj = pdu.decode(pdu_type, memoryview(body))
    assert isinstance(rj, pdu.AssociateRJ)
    return rj.result, rj.source, rj.reason


def refusal_logged(srv: RunningServer, what: str, calling: str, reason: str) -> str:
    """The server's WARNING line for a refusal (polled: the log is another process's)."""
    head = f"WARNING pypacs.net.access: {what} refused: calling AE {calling}, called AE "

    def line() -> str | None:
        found = [x for x in srv.log().splitlines() if head in x and reason in x]
        return found[-1] if found else None

    found: str = wait_for(line, timeout=30, what=f"the refusal of {what} to {calling}")
    return found


def contexts(port: int, calling: str, *abstract_syntaxes: str) -> dict[str, int]:
    """Each proposed context's result (PS3.8 9.3.3.2), pynetdicom proposing."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for syntax in abstract_syntaxes:
        ae.add_requested_context(syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="PYPACS")
    try:
        assert assoc.is_established
        return {
            str(cx.abstract_syntax): int(cx.result)  # type: ignore[arg-type]
            for cx in [*assoc.accepted_contexts, *assoc.rejected_contexts]
        }
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def study_query() -> bytes:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = STUDY
    return encode_identifier(query, EXPLICIT)


# -- who may associate -------------------------------------------------------------------


def test_another_called_ae_title_is_rejected(guarded: Guarded) -> None:
    srv = guarded.server
    assert rejection(srv.dicom_port, calling_ae="KNOWN", called_ae="OTHER") == (
        CALLED_NOT_RECOGNIZED
    )
    # DCMTK's default called AE title, ANY-SCP, is not ours either.
    run = subprocess.run(
        ["echoscu", "-aet", "KNOWN", "127.0.0.1", str(srv.dicom_port)],
        capture_output=True,
        text=True,
        env=NODELAY,
        timeout=60,
    )
    assert run.returncode != 0
    assert "Reason: Called AE Title Not Recognized" in run.stdout + run.stderr
    line = refusal_logged(srv, "association", "KNOWN", "called AE title is not ours (PYPACS)")
    assert "called AE ANY-SCP, from 127.0.0.1:" in line
    assert dcmtk("echoscu", srv, "KNOWN").returncode == 0


def test_a_remote_that_must_call_from_its_host(guarded: Guarded) -> None:
    srv = guarded.server
    # HOSTED's host is 127.0.0.2; from 127.0.0.1 its title is not recognised.
    assert rejection(srv.dicom_port, calling_ae="HOSTED") == CALLING_NOT_RECOGNIZED
    line = refusal_logged(srv, "association", "HOSTED", "calls from its host 127.0.0.2 only")
    assert "called AE PYPACS, from 127.0.0.1:" in line
    # From 127.0.0.2 (the loopback network answers from any of its addresses): accepted.
    ae = AE(ae_title="HOSTED")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", srv.dicom_port, ae_title="PYPACS", bind_address=("127.0.0.2", 0)
    )
    try:
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0x0000
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def test_a_remote_allowed_nothing_is_rejected(guarded: Guarded) -> None:
    srv = guarded.server
    assert rejection(srv.dicom_port, calling_ae="NOTHING") == CALLING_NOT_RECOGNIZED
    refusal_logged(srv, "association", "NOTHING", "remote nothing is allowed no service")


def test_closed_to_strangers(tmp_path: Path) -> None:
    srv = start(
        tmp_path,
        "[access]\nunknown_callers = []\ncheck_called_ae = false\n" + remote("known", "KNOWN"),
    )
    try:
        assert rejection(srv.dicom_port, calling_ae="STRANGER") == CALLING_NOT_RECOGNIZED
        run = dcmtk("echoscu", srv, "STRANGER2")
        assert run.returncode != 0
        assert "Reason: Calling AE Title Not Recognized" in run.stdout + run.stderr
        line = refusal_logged(srv, "association", "STRANGER2", "[access] unknown_callers is empty")
        assert "called AE PYPACS, from 127.0.0.1:" in line
        # A remote may, and with check_called_ae = false whatever title it calls.
        assert dcmtk("echoscu", srv, "KNOWN").returncode == 0
        assert dcmtk("echoscu", srv, "KNOWN", called="ANYTHING").returncode == 0
    finally:
        srv.kill()


# -- which services ------------------------------------------------------------------------


def test_unknown_callers_may_echo_and_find_but_not_store(guarded: Guarded, tmp_path: Path) -> None:
    srv = guarded.server
    assert dcmtk("echoscu", srv, "STRANGER").returncode == 0
    found = find_study(srv, "STRANGER")
    assert found.returncode == 0, found.stderr
    assert f"UI [{STUDY}]" in found.stdout + found.stderr
    other = write(Spec("ACC2", "Access^Two", 1, 1, 1), tmp_path)
    stored = dcmtk("storescu", srv, "STRANGER", str(other))
    assert stored.returncode != 0
    assert "No Acceptable Presentation Contexts" in stored.stdout + stored.stderr
    assert contexts(srv.dicom_port, "STRANGER", CTImageStorage, Verification) == {
        CTImageStorage: USER_REJECTION,
        Verification: 0,
    }
    assert len(index_rows(srv.database_url, "instance")) == 1
    line = refusal_logged(srv, "store", "STRANGER", "not in [access] unknown_callers")
    assert "called AE PYPACS, from 127.0.0.1:" in line


def test_a_remote_without_move_finds_but_cannot_move(guarded: Guarded) -> None:
    srv = guarded.server
    found = find_study(srv, "NOMOVE")
    assert found.returncode == 0, found.stderr
    assert f"UI [{STUDY}]" in found.stdout + found.stderr
    moved = move_study(srv, "NOMOVE")  # movescu exits 0 all the same
    assert "DIMSE No valid Presentation Context ID" in moved.stdout + moved.stderr
    assert contexts(srv.dicom_port, "NOMOVE", MOVE, FIND) == {MOVE: USER_REJECTION, FIND: 0}
    refusal_logged(srv, "move", "NOMOVE", "not in the allow list of remote nomove")
    # A C-MOVE-RQ over the C-FIND context it was given: refused all the same.
    context = pdu.PresentationContextRQ(1, FIND, (EXPLICIT,))
    with requestor(srv.dicom_port, context, calling_ae="NOMOVE") as assoc:
        assert list(assoc.contexts) == [1]
        assoc.send_message(1, dimse.move_rq(7, FIND, "STORESCP"), study_query())
        answer = assoc.receive()
    assert answer is not None
    assert (answer.command.status, answer.command.error_comment) == (
        NOT_AUTHORIZED,
        "move not in the allow list of remote nomove",
    )
    assert list(guarded.received.iterdir()) == []
    # KNOWN may: the same move sends the study.
    allowed = move_study(srv, "KNOWN")
    assert allowed.returncode == 0, allowed.stderr
    assert len(list(guarded.received.iterdir())) == 1
    for item in guarded.received.iterdir():
        item.unlink()


def test_a_remote_without_store_cannot_store(guarded: Guarded, tmp_path: Path) -> None:
    srv = guarded.server
    other = write(Spec("ACC3", "Access^Three", 1, 1, 1), tmp_path)
    stored = dcmtk("storescu", srv, "NOSTORE", str(other))
    assert stored.returncode != 0
    assert "No Acceptable Presentation Contexts" in stored.stdout + stored.stderr
    refusal_logged(srv, "store", "NOSTORE", "not in the allow list of remote nostore")
    # A C-STORE-RQ over the Verification context it was given: refused, nothing kept.
    context = pdu.PresentationContextRQ(1, Verification, (EXPLICIT,))
    with requestor(srv.dicom_port, context, calling_ae="NOSTORE") as assoc:
        assert list(assoc.contexts) == [1]
        sop_instance = str(uid.generate_uid())
        assoc.send_message(1, dimse.store_rq(3, CTImageStorage, sop_instance), dataset_bytes(other))
        answer = assoc.receive()
    assert answer is not None
    assert (answer.command.status, answer.command.error_comment) == (
        NOT_AUTHORIZED,
        "store not in the allow list of remote nostore",
    )
    assert len(index_rows(srv.database_url, "instance")) == 1
    assert dcmtk("echoscu", srv, "NOSTORE").returncode == 0


# -- the rules alone ------------------------------------------------------------------------


def policy(*peers: Peer, unknown: tuple[Service, ...] = ALL_SERVICES) -> AccessPolicy:
    options = replace(defaults().net_options(), remotes=Peers.of(peers), unknown_callers=unknown)
    return AccessPolicy(options)


def test_a_host_is_compared_by_what_it_resolves_to() -> None:
    rules = policy(Peer("ws", "WS", "localhost", 104, check_host=True))
    # localhost is 127.0.0.1 (and ::1); an IPv4-mapped IPv6 peer address is the same host.
    assert rules.decide_association("WS", "PYPACS", ("127.0.0.1", 5000)) is None
    assert rules.decide_association("WS", "PYPACS", ("::ffff:127.0.0.1", 5000)) is None
    refused = rules.decide_association("WS", "PYPACS", ("10.1.2.3", 5000))
    assert refused is not None
    assert (refused.address, refused.rejection().reason) == ("10.1.2.3:5000", 3)


def test_addresses_are_refreshed_in_the_background_and_kept_on_failure() -> None:
    answers: list[frozenset[str] | OSError] = [frozenset({"10.0.0.1"}), frozenset({"10.0.0.2"})]
    answers.append(OSError("no such name"))
    calls: list[str] = []

    def resolver(host: str) -> frozenset[str]:
        calls.append(host)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, OSError):
            raise answer
        return answer

    hosts = HostAddresses(["ws.example"], resolver, refresh=0.0)
    assert calls == ["ws.example"]  # resolved at start
    # Stale at once (refresh 0): the known addresses answer, a refresh runs behind.
    assert hosts.addresses("ws.example") == {"10.0.0.1"}
    wait_for(lambda: hosts.addresses("ws.example") == {"10.0.0.2"}, what="the refresh")
    # The name stops resolving: the addresses known stay.
    wait_for(lambda: len(calls) >= 3, what="a failed refresh")
    assert hosts.addresses("ws.example") == {"10.0.0.2"}


def test_services_of_each_caller() -> None:
    rules = policy(
        Peer("ws", "WS", "h", 104, allow=(Service.FIND,)), unknown=(Service.ECHO, Service.STORE)
    )
    assert rules.services("WS ") == {Service.FIND}
    assert rules.allows("OTHER", Service.STORE)
    assert not rules.allows("OTHER", Service.MOVE)
    assert service_of(MOVE) is Service.MOVE
    assert service_of(FIND) is Service.FIND
    assert service_of(Verification) is Service.ECHO
    assert service_of(CTImageStorage) is Service.STORE
    assert service_of("1.2.3.4.5.6") is Service.STORE  # a private storage class


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            remote("ws", "WS", 'allow = ["echo", "push"]'),
            "[remotes.ws] allow = ['echo', 'push']: expected a list of services among "
            "echo, store, find, get, move",
        ),
        (
            '[retrieve]\nallowed_aes = ["WS"]\n',
            "[retrieve] allowed_aes was replaced by [remotes.NAME] allow and [access] "
            "unknown_callers; see README",
        ),
    ],
)
def test_a_wrong_access_setting_stops_the_server_with_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "pypacs.toml"
    config.write_text(text)
    result = run_pypacs("serve", "--config", str(config), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"pypacs: configuration error: {config}: {message}\n"
