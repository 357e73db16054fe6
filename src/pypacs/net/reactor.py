"""What net/scu.py still takes from the pynetdicom days: TCP_NODELAY on its connections."""

from __future__ import annotations

import socket
from typing import Any


def nodelay(event: Any) -> None:
    """An EVT_CONN_OPEN handler: without TCP_NODELAY, Nagle's algorithm holds each small
    PDU back (about 40 ms on loopback, waiting for the peer's delayed ACK)."""
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
