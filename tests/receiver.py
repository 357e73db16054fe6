"""A C-STORE SCP for the tests (pynetdicom): the move destination whose behaviour a test sets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE


@dataclass
class Received:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    data: bytes  # the dataset bytes as they arrived
    move_originator: str | None


@dataclass
class Receiver:
    port: int
    ae_title: str
    received: list[Received] = field(default_factory=list)
    open_associations: int = 0
    most_at_once: int = 0  # the most associations open at the same time

    def by_uid(self) -> dict[str, Received]:
        return {r.sop_instance_uid: r for r in self.received}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def receiver(
    *,
    ae_title: str = "DEST",
    syntaxes: Sequence[str] | None = None,
    status_for: Callable[[str, int], int] | None = None,
) -> Iterator[Receiver]:
    """A storage SCP on a free port, recording what it receives. ``syntaxes`` limits the
    transfer syntaxes it accepts; ``status_for(sop_instance_uid, n)`` (n counts from 1)
    chooses each C-STORE response status (success when not given)."""
    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(
            str(context.abstract_syntax), list(syntaxes) if syntaxes else context.transfer_syntax
        )
    result = Receiver(free_port(), ae_title)
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        uid = str(request.AffectedSOPInstanceUID)
        originator = request.MoveOriginatorApplicationEntityTitle
        with lock:
            result.received.append(
                Received(
                    uid,
                    str(request.AffectedSOPClassUID),
                    str(UID(event.context.transfer_syntax)),
                    cast(BytesIO, request.DataSet).getvalue(),
                    originator.strip() if originator else None,
                )
            )
            n = len(result.received)
        return status_for(uid, n) if status_for else 0x0000

    def on_open(_event: evt.Event) -> None:
        with lock:
            result.open_associations += 1
            result.most_at_once = max(result.most_at_once, result.open_associations)

    def on_close(_event: evt.Event) -> None:
        with lock:
            result.open_associations -= 1

    server = ae.start_server(
        ("127.0.0.1", result.port),
        block=False,
        evt_handlers=[
            (evt.EVT_C_STORE, on_store),
            (evt.EVT_CONN_OPEN, on_open),
            (evt.EVT_CONN_CLOSE, on_close),
        ],
    )
    assert server is not None  # block=False returns the running server
    try:
        yield result
    finally:
        server.shutdown()


def config_file(folder: Path, receivers: Sequence[Receiver], extra: str = "") -> Path:
    """A pypacs TOML file declaring each receiver as a [remotes] entry."""
    lines = [extra]
    for r in receivers:
        lines += [
            f"[remotes.{r.ae_title.lower()}]",
            f'ae_title = "{r.ae_title}"',
            'host = "127.0.0.1"',
            f"port = {r.port}",
        ]
    path = folder / "pypacs.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def received_dataset(item: Received) -> Dataset:
    from pynetdicom.dsutils import decode

    ts = UID(item.transfer_syntax)
    return decode(BytesIO(item.data), ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
