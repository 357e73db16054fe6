"""Who may do what on the DICOM port: the association acceptance policy.

A calling AE title among the ``[remotes]`` may use the services of its ``allow`` list, and
with ``check_host`` only from its ``host``; any other calling AE title may use those of
``[access] unknown_callers``. With ``[access] check_called_ae`` an association addressed to
another AE title than ours is rejected. Every refusal goes through ``AccessPolicy.refused``,
the one place that logs it; the audit trail records it as a security alert (net/services.py).

The hot path is a dict lookup per association and a set membership per message; host
names are resolved at start and refreshed in the background, never while a peer waits
(except a first look-up of a name that could not be resolved at start).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pypacs.model.access import Service
from pypacs.model.sop import QR_FIND, QR_GET, QR_MOVE
from pypacs.net import dimse, pdu
from pypacs.net.options import NetOptions
from pypacs.remote.registry import Peer

log = logging.getLogger(__name__)

VERIFICATION = dimse.VERIFICATION_SOP_CLASS  # PS3.4 A.4
HOST_REFRESH_SECONDS = 60.0  # how old a host's resolved addresses may get before a refresh

# The service a presentation context's abstract syntax belongs to; any other syntax we
# accept is a storage SOP class (listed or not).
_SERVICE_OF: dict[str, Service] = {VERIFICATION: Service.ECHO}
_SERVICE_OF.update(dict.fromkeys(QR_FIND, Service.FIND))
_SERVICE_OF.update(dict.fromkeys(QR_GET, Service.GET))
_SERVICE_OF.update(dict.fromkeys(QR_MOVE, Service.MOVE))


def service_of(abstract_syntax: str) -> Service:
    """The service a presentation context of ``abstract_syntax`` serves."""
    return _SERVICE_OF.get(abstract_syntax, Service.STORE)


def proposed_services(rq: pdu.AssociateRQ) -> frozenset[Service]:
    """The services an A-ASSOCIATE-RQ's contexts ask for. A storage context whose role
    selection leaves the requestor the SCP role only serves C-GET's sub-operations
    (PS3.4 C.4.3.1), not C-STORE."""
    asked = {r.sop_class: r for r in rq.user.roles}
    found: set[Service] = set()
    for cx in rq.contexts:
        service = service_of(cx.abstract_syntax)
        role = asked.get(cx.abstract_syntax)
        if not (service is Service.STORE and role is not None and not role.scu):
            found.add(service)
    return frozenset(found)


@dataclass(frozen=True)
class Refusal:
    """Something refused to a caller: the whole association (``service`` None, with the
    A-ASSOCIATE-RJ reason of PS3.8 9.3.4) or one service."""

    calling_ae: str
    called_ae: str
    address: str
    reason: str
    service: Service | None = None
    reject_reason: int = pdu.RJ_USER_CALLING_AE_NOT_RECOGNIZED

    def rejection(self) -> pdu.AssociateRJ:
        """The A-ASSOCIATE-RJ: PS3.8 9.3.4, rejected-permanent by the service-user."""
        return pdu.AssociateRJ(pdu.RJ_PERMANENT, pdu.RJ_SOURCE_USER, self.reject_reason)


Resolve = Callable[[str], frozenset[str]]


def resolve(host: str) -> frozenset[str]:
    """The addresses ``host`` resolves to (a literal address resolves to itself).

    Raises:
        OSError: the name cannot be resolved.
    """
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return frozenset(_normal(str(info[4][0])) for info in infos)


def _normal(address: str) -> str:
    """An address as compared: an IPv4-mapped IPv6 address as its IPv4 form, the scope
    dropped."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class HostAddresses:
    """Each checked host's addresses, resolved at start and refreshed in a background
    thread once older than ``refresh``; a failed refresh keeps what was known."""

    def __init__(
        self,
        hosts: Iterable[str],
        resolver: Resolve = resolve,
        refresh: float = HOST_REFRESH_SECONDS,
    ) -> None:
        self._resolve = resolver
        self._refresh = refresh
        self._lock = threading.Lock()
        self._known: dict[str, tuple[frozenset[str], float]] = {}
        self._refreshing: set[str] = set()
        for host in set(hosts):
            self._update(host)

    def addresses(self, host: str) -> frozenset[str]:
        """What ``host`` resolved to last (empty when it never resolved)."""
        with self._lock:
            known = self._known.get(host)
            stale = known is None or time.monotonic() - known[1] > self._refresh
            start = stale and host not in self._refreshing and known is not None
            if start:
                self._refreshing.add(host)
        if known is None:
            return self._update(host)
        if start:
            threading.Thread(
                target=self._update, args=(host,), name="pypacs-resolve", daemon=True
            ).start()
        return known[0]

    def _update(self, host: str) -> frozenset[str]:
        try:
            found = self._resolve(host)
        except OSError as exc:
            log.warning("remote host %s cannot be resolved: %s", host, exc)
            found = None
        with self._lock:
            self._refreshing.discard(host)
            old = self._known.get(host)
            if found is None:
                found = old[0] if old is not None else frozenset()
            self._known[host] = (found, time.monotonic())
        return found


class AccessPolicy:
    """The rules of ``[access]`` and of each remote's ``allow`` and ``check_host``."""

    def __init__(self, options: NetOptions, resolver: Resolve = resolve) -> None:
        self.ae_title = options.ae_title.strip()
        self.check_called_ae = options.check_called_ae
        self.unknown_callers = frozenset(options.unknown_callers)
        # PS3.8 9.3.2: the first remote of an AE title speaks for it (Peers.by_ae_title).
        self._peers: dict[str, Peer] = {}
        for peer in options.remotes:
            self._peers.setdefault(peer.ae_title.strip(), peer)
        self._allowed = {title: frozenset(p.allow) for title, p in self._peers.items()}
        self._hosts = HostAddresses(
            (p.host for p in self._peers.values() if p.check_host), resolver
        )

    def services(self, calling_ae: str) -> frozenset[Service]:
        """What ``calling_ae`` may use (its remote's ``allow``, or ``unknown_callers``)."""
        return self._allowed.get(calling_ae.strip(), self.unknown_callers)

    def allows(self, calling_ae: str, service: Service) -> bool:
        """``calling_ae`` may use ``service``."""
        return service in self.services(calling_ae)

    def decide_association(
        self, calling_ae: str, called_ae: str, peer: tuple[str, int]
    ) -> Refusal | None:
        """The refusal of an A-ASSOCIATE-RQ from ``peer`` (address, port), or None when it
        may go on to the negotiation of its contexts."""
        calling, called = calling_ae.strip(), called_ae.strip()

        def refusal(reason: str, code: int = pdu.RJ_USER_CALLING_AE_NOT_RECOGNIZED) -> Refusal:
            return Refusal(calling, called, f"{peer[0]}:{peer[1]}", reason, reject_reason=code)

        # PS3.8 9.3.4: "called-AE-title-not-recognized" (7), "calling-AE-title-not-
        # recognized" (3); a known title from the wrong host is not recognised either.
        if self.check_called_ae and called != self.ae_title:
            return refusal(
                f"called AE title is not ours ({self.ae_title})",
                pdu.RJ_USER_CALLED_AE_NOT_RECOGNIZED,
            )
        known = self._peers.get(calling)
        if known is None:
            if not self.unknown_callers:
                return refusal("not among the remotes ([access] unknown_callers is empty)")
            return None
        if known.check_host and _normal(peer[0]) not in self._hosts.addresses(known.host):
            return refusal(f"remote {known.name} calls from its host {known.host} only")
        if not known.allow:
            return refusal(f"remote {known.name} is allowed no service")
        return None

    def refused(self, refusal: Refusal) -> None:
        """Report a refusal: every one passes here (association, context or request)."""
        what = "association" if refusal.service is None else refusal.service.value
        log.warning(
            "%s refused: calling AE %s, called AE %s, from %s: %s",
            what,
            refusal.calling_ae or "?",
            refusal.called_ae or "?",
            refusal.address,
            refusal.reason,
        )

    def why_not(self, calling_ae: str) -> str:
        """Why a service outside ``services(calling_ae)`` is refused, for messages."""
        peer = self._peers.get(calling_ae.strip())
        if peer is None:
            return "not in [access] unknown_callers"
        return f"not in the allow list of remote {peer.name}"
