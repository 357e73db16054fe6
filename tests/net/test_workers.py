"""``[server] workers``: several processes accept on the same DICOM and HTTP ports, each a
stateless node over the one index and store (DESIGN.md, Scale).

Real servers (``--workers 2``): the same instance stored through both workers at once is
indexed once; a worker killed mid-ingest is restarted and nothing acknowledged is lost; the
whole server killed takes its workers with it and a restart finds every acknowledged
instance; an admin job started through one worker is read through the other.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydicom.filereader import read_file_meta_info

from pypacs.net import dimse, pdu
from pypacs.net.acceptor import Acceptor, Limits, Offer, negotiate
from pypacs.net.association import Association, Decision, Identity, Timeouts

from dicomgen import Spec, write
from helpers import (
    SUCCESS,
    assert_counts_consistent,
    association,
    blob_files,
    blob_path,
    contexts_for,
    index_rows,
    send_file,
    startup_check,
    status_of,
    store_files,
    wait_for,
)
from serving import RunningServer

WORKERS = ("--workers", "2")
PARALLEL = 8  # associations storing the same instance at once
THREADS, PER_THREAD, KILL_AFTER = 4, 30, 30
NODELAY = {**os.environ, "TCP_NODELAY": "1"}
_SOP_INSTANCE_UID, _STUDY_UID, _SERIES_UID = "00080018", "0020000D", "0020000E"


def workers_of(server: RunningServer) -> list[int]:
    """The server's worker processes, by pid: its children (forked by any of its threads)
    that run its own command line, not a helper process some library may start."""
    parent = server.proc.pid
    command = Path(f"/proc/{parent}/cmdline").read_bytes()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            same = (entry / "cmdline").read_bytes() == command
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and same:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sockets_of(pid: int) -> int:
    """How many sockets process ``pid`` has open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:[")
        except OSError:
            continue
    return count


def connections_held(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections on local ``port`` each process holds."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    held: dict[int, int] = {}
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        held[pid] = count
    return held


def qido_instances(server: RunningServer) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{server.http_port}/dicom-web/instances"
    response = httpx.get(url, params={"limit": "0"}, timeout=30)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


def value(obj: dict[str, Any], tag: str) -> str:
    return str(obj[tag]["Value"][0])


class Ingest:
    """Parallel associations storing files, one batch each; records what was acknowledged."""

    def __init__(self, port: int, batches: list[list[Path]]) -> None:
        self.port = port
        self.acked: set[str] = set()
        self.errors: list[BaseException] = []
        self.enough = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(n, batch), name=f"ingest-{n}")
            for n, batch in enumerate(batches)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, n: int, batch: list[Path]) -> None:
        try:
            with association(
                self.port, contexts_for(batch), ae_title=f"WORK{n}", timeout=2.0
            ) as assoc:
                assert assoc.is_established
                for path in batch:
                    if not assoc.is_established:
                        return
                    try:
                        status = send_file(assoc, path)
                    except RuntimeError:  # the association ended between two checks
                        return
                    if status_of(status) != SUCCESS:
                        return
                    uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
                    with self._lock:
                        self.acked.add(uid)
                        if len(self.acked) >= KILL_AFTER:
                            self.enough.set()
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> set[str]:
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        assert self.errors == []
        return set(self.acked)


def make_batches(folder: Path) -> list[list[Path]]:
    folder.mkdir()
    return [
        [
            write(Spec(f"WORK{n}", f"Work^{n}", 1, 1 + i // 10, i, rows=64), folder)
            for i in range(PER_THREAD)
        ]
        for n in range(THREADS)
    ]


def uid_of(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def assert_all_retrievable(server: RunningServer, acked: set[str]) -> None:
    """Every acknowledged instance is found by QIDO-RS and retrieved by WADO-RS."""
    found = {value(o, _SOP_INSTANCE_UID): o for o in qido_instances(server)}
    assert acked - found.keys() == set()
    base = f"http://127.0.0.1:{server.http_port}/dicom-web"
    with httpx.Client(base_url=base, timeout=30) as http:
        for uid in sorted(acked):
            obj = found[uid]
            path = f"/studies/{value(obj, _STUDY_UID)}/series/{value(obj, _SERIES_UID)}"
            response = http.get(
                f"{path}/instances/{uid}",
                headers={"Accept": 'multipart/related; type="application/dicom"'},
            )
            assert response.status_code == 200, (uid, response.status_code)


def _store_at_once(port: int, path: Path, workers: list[int]) -> dict[int, int]:
    """PARALLEL associations store ``path`` at once; where they landed (worker -> count)."""
    before = {pid: sockets_of(pid) for pid in workers}
    opened = threading.Barrier(PARALLEL + 1)
    sent = threading.Barrier(PARALLEL)
    statuses: list[str] = []
    errors: list[BaseException] = []

    def store(n: int) -> None:
        try:
            with association(port, contexts_for([path]), ae_title=f"SAME{n}") as a:
                assert a.is_established
                opened.wait(timeout=30)  # all associations open: count where they landed
                sent.wait(timeout=30)  # then all send at once
                statuses.append(status_of(send_file(a, path)))
        except BaseException as exc:
            errors.append(exc)
            opened.abort()

    threads = [threading.Thread(target=store, args=(n,)) for n in range(PARALLEL)]
    for thread in threads:
        thread.start()
    opened.wait(timeout=30)

    seen: list[dict[int, int]] = [{}]

    def all_held() -> dict[int, int] | None:
        # The sockets each worker holds beyond those it held before: its associations.
        seen[0] = {pid: sockets_of(pid) - before[pid] for pid in workers}
        return seen[0] if sum(seen[0].values()) == PARALLEL else None

    try:
        held = wait_for(all_held, timeout=20, what="every association held by a worker")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen[0]} among workers {workers}") from None
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert statuses == [SUCCESS] * PARALLEL
    return dict(held)


def test_the_same_instance_through_both_workers_at_once_is_indexed_once(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = server_factory(*WORKERS)
    workers = workers_of(server)
    assert len(workers) == 2
    # Which worker accepts a connection is the kernel's choice: try again, with another
    # instance each time, until the associations land on both (the stores race across
    # processes); each try must leave exactly one row for its instance.
    sent: list[str] = []
    for attempt in range(1, 9):
        path = write(Spec("SAME", "Same^Instance", 1, 1, attempt, rows=64), tmp_path)
        sent.append(uid_of(path))
        held = _store_at_once(server.dicom_port, path, workers)
        rows = index_rows(server.database_url, "instance")
        assert sorted(r["sop_instance_uid"] for r in rows) == sorted(sent)
        if all(count > 0 for count in held.values()):
            break
    assert all(count > 0 for count in held.values()), held
    assert len(blob_files(server.data)) == len(sent)
    assert sorted(value(o, _SOP_INSTANCE_UID) for o in qido_instances(server)) == sorted(sent)
    assert_counts_consistent(server.database_url)


def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = server_factory(*WORKERS)
    first = workers_of(server)
    batches = make_batches(tmp_path / "sent")
    sent = {uid_of(p): p for batch in batches for p in batch}
    ingest = Ingest(server.dicom_port, batches)
    assert ingest.enough.wait(timeout=60), "the ingest never got going"
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    acked = ingest.join()
    assert KILL_AFTER <= len(acked) <= len(sent)

    def restarted() -> list[int] | None:
        now = workers_of(server)
        return now if len(now) == 2 and victim not in now else None

    now = wait_for(restarted, timeout=20, what="the killed worker to be replaced")
    assert first[1] in now
    log = server.log()
    assert f"(pid {victim}) was killed by signal {int(signal.SIGKILL)}; restarting it" in log
    replacement = next(pid for pid in now if pid != first[1])
    assert f"started (pid {replacement})" in log

    rows = {row["sop_instance_uid"]: row for row in index_rows(server.database_url, "instance")}
    assert acked - rows.keys() == set()
    assert rows.keys() - sent.keys() == set()
    for row in rows.values():
        assert blob_path(server.data, row["blob_key"]).stat().st_size == row["blob_size"]
    assert_all_retrievable(server, acked)
    # The replacement serves too: the whole set goes in again, the rest stored.
    statuses = store_files(server.dicom_port, list(sent.values()))
    assert Counter(status_of(s) for s in statuses.values()) == {SUCCESS: len(sent)}
    assert len(index_rows(server.database_url, "instance")) == len(sent)
    assert_counts_consistent(server.database_url)
    assert server.stop() == 0
    assert not any(alive(pid) for pid in now)


def test_a_killed_server_takes_its_workers_and_a_restart_finds_every_acknowledged_instance(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = server_factory(*WORKERS)
    workers = workers_of(server)
    batches = make_batches(tmp_path / "sent")
    sent = {uid_of(p): p for batch in batches for p in batch}
    ingest = Ingest(server.dicom_port, batches)
    assert ingest.enough.wait(timeout=60), "the ingest never got going"
    server.kill()  # SIGKILL of the parent: the kernel kills the workers with it
    acked = ingest.join()
    assert KILL_AFTER <= len(acked) < len(sent), "the kill did not land mid-ingest"
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10, what="workers gone")

    again = server_factory(*WORKERS, data=server.data)
    check = startup_check(again.log())
    assert (check["missing"], check["unreadable"]) == (0, 0)
    rows = {row["sop_instance_uid"]: row for row in index_rows(again.database_url, "instance")}
    assert acked - rows.keys() == set()
    assert rows.keys() - sent.keys() == set()
    assert {str(p.relative_to(again.data / "blobs")) for p in blob_files(again.data)} == {
        row["blob_key"] for row in rows.values()
    }
    assert_all_retrievable(again, acked)
    assert_counts_consistent(again.database_url)


def test_an_admin_job_started_through_one_worker_is_read_through_the_other(
    server_factory: Callable[..., RunningServer], tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    config = tmp_path / "pypacs.toml"
    config.write_text(
        f'[remotes.store]\nae_title = "STORESCP"\nhost = "127.0.0.1"\nport = {storescp[0]}\n'
    )
    server = server_factory(*WORKERS, "--config", str(config))
    workers = workers_of(server)
    files = [write(Spec("JOB1", "Job^One", 1, 1, i, rows=32), tmp_path) for i in (1, 2, 3)]
    statuses = store_files(server.dicom_port, files)
    assert {status_of(s) for s in statuses.values()} == {SUCCESS}
    study = index_rows(server.database_url, "study")[0]["study_instance_uid"]
    base = f"http://127.0.0.1:{server.http_port}"
    response = httpx.post(
        f"{base}/api/remotes/store/move", json={"StudyInstanceUID": study}, timeout=60
    )
    assert response.status_code == 202
    job = response.json()["job"]

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(f"{base}/api/jobs/{job}", timeout=30).json()
        return None if body["state"] in ("queued", "running") else body

    final = wait_for(finished, timeout=60, what=f"job {job} to finish")
    assert (final["state"], final["completed"], final["failed"]) == ("done", 3, 0)
    # Connections held open, each asking: more are opened until each worker holds some
    # (which worker accepts one is the kernel's choice), and every one answers alike.
    clients: list[httpx.Client] = []
    bodies: list[Any] = []
    held: dict[int, int] = {}
    try:
        while len(clients) < 64:
            clients.append(httpx.Client(base_url=base, timeout=30))
            bodies.append(clients[-1].get(f"/api/jobs/{job}").json())
            held = connections_held(workers, server.http_port)
            if len(clients) >= 8 and all(count > 0 for count in held.values()):
                break
    finally:
        for client in clients:
            client.close()
    assert sum(held.values()) == len(clients)
    assert all(count > 0 for count in held.values()), held
    assert bodies == [final] * len(clients)


def echo_service(assoc: Association) -> None:
    """C-ECHO SCP: answer each C-ECHO-RQ with success until the peer releases."""
    while (message := assoc.receive()) is not None:
        assert message.command.message_id is not None
        assoc.send_message(message.context_id, dimse.echo_rsp(message.command.message_id))


def echo_only(rq: pdu.AssociateRQ, peer: tuple[str, int]) -> Decision:
    return negotiate(rq, {"1.2.840.10008.1.1": Offer(frozenset({"1.2.840.10008.1.2"}))})


def echoscu(port: int) -> int:
    command = ["echoscu", "-aec", "PYPACS", "127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, env=NODELAY, timeout=30).returncode


def test_acceptors_share_a_listening_socket_and_one_stopping_leaves_the_other_serving() -> None:
    shared = socket.create_server(("127.0.0.1", 0))
    port = shared.getsockname()[1]
    acceptors = [
        Acceptor(
            decide=echo_only,
            on_association=echo_service,
            identity=Identity(65536, "1.2.3.4"),
            timeouts=Timeouts(artim=1.0, pdu_read=0.5, dimse_idle=5.0),
            limits=Limits(),
            sock=shared,
        )
        for _ in range(2)
    ]
    try:
        for acceptor in acceptors:
            acceptor.start()
        assert acceptors[0].address == acceptors[1].address == ("127.0.0.1", port)
        assert [echoscu(port) for _ in range(4)] == [0] * 4
        acceptors[0].stop()
        # The shared socket was neither shut down nor closed: the other still accepts.
        assert shared.fileno() != -1
        assert [echoscu(port) for _ in range(4)] == [0] * 4
    finally:
        for acceptor in acceptors:
            acceptor.stop()
        shared.close()
