"""Who may hold a connection to the DICOM receiver before saying who it is, and for how long.

pynetdicom starts an association (two threads, one polling the socket every millisecond) for
every TCP connection and counts them against its association limit, whether or not the peer has
sent anything: connections that say nothing, or trickle an A-ASSOCIATE-RQ a byte at a time, fill
the limit and every registered sender is refused (rejected-transient, local limit exceeded). The
gate keeps the two apart:

- A *pending* connection has been accepted but not identified. Each one is admitted at accept
  within a limit per peer address and a limit in all (past either it is closed before a byte is
  read), and must complete its association request within a deadline counted from accept, not
  reset by each byte (as the HTTP edge bounds a request head: backend/edge/protocol.py). scp.py
  reads the request itself, in the connection's own thread, before pynetdicom starts anything.
- An *association* is a connection whose request named an enabled sender. Only these count
  against the association limit.

Where every enabled sender is tied to a host or network, a connection from any other address
cannot be a sender and is refused at accept (`may_be_sender`); the ACSE look-up in scp.py still
decides who a peer is.

The scp.py server calls `admit` at accept, `remaining` while it reads the request,
`request_received` once it is complete, `associate` once it named a sender, and `release` when
the connection ends.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

PENDING = "pending"  # accepted; the association request is not complete yet (the deadline runs)
REQUESTED = "requested"  # the request is complete; not yet known to be from a sender
ASSOCIATED = "associated"  # counted against the association limit
CLOSED = "closed"  # released: counted nowhere

# Refusal reasons, as they appear in logs.
TOO_MANY_PENDING = "too_many_pending"
TOO_MANY_PENDING_FROM_ADDRESS = "too_many_pending_from_address"
ADDRESS_NOT_A_SENDER = "address_not_a_sender"

# A refusal or a drop is logged once per (address, reason) this often, with how many went unlogged:
# a peer hammering the port cannot flood the log.
REFUSAL_LOG_INTERVAL_SECONDS = 10.0
_LOGGED_KEYS = 1024


@dataclass(eq=False)
class Ticket:
    """One accepted connection, from admission to release."""

    address: str
    deadline: float  # on the gate's clock
    state: str = PENDING


class Gate:
    def __init__(
        self,
        *,
        max_associations: int,
        max_pending: int,
        max_pending_per_address: int,
        associate_deadline_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_associations = max_associations
        self.max_pending = max_pending
        self.max_pending_per_address = max_pending_per_address
        self.associate_deadline_seconds = associate_deadline_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pending_by_address: Counter[str] = Counter()
        self._pending = 0
        self._associations = 0
        self._logged: dict[tuple[str, str, str], tuple[float, int]] = {}

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def associations(self) -> int:
        return self._associations

    def admit(self, address: str) -> tuple[Ticket | None, str]:
        """A ticket for a connection just accepted from `address`, or (None, why it is refused)."""
        with self._lock:
            if self._pending_by_address[address] >= self.max_pending_per_address:
                why = TOO_MANY_PENDING_FROM_ADDRESS
            elif self._pending >= self.max_pending:
                why = TOO_MANY_PENDING
            else:
                ticket = Ticket(address=address, deadline=self._clock() + self.associate_deadline_seconds)
                self._pending += 1
                self._pending_by_address[address] += 1
                return ticket, ""
        self.log_refusal(address, why)
        return None, why

    def remaining(self, ticket: Ticket) -> float:
        """Seconds left for the association request to be complete (0 or less: too late)."""
        return ticket.deadline - self._clock()

    def request_received(self, ticket: Ticket) -> None:
        """The association request is complete: its deadline no longer applies."""
        with self._lock:
            if ticket.state == PENDING:
                ticket.state = REQUESTED

    def associate(self, ticket: Ticket) -> bool:
        """The request named an enabled sender: count it as an association, if one is free.

        False (and still pending) when the association limit is reached."""
        with self._lock:
            if ticket.state == ASSOCIATED:
                return True
            if ticket.state == CLOSED or self._associations >= self.max_associations:
                return False
            self._forget_pending(ticket)
            ticket.state = ASSOCIATED
            self._associations += 1
            return True

    def release(self, ticket: Ticket) -> None:
        """The connection has ended (idempotent)."""
        with self._lock:
            if ticket.state == ASSOCIATED:
                self._associations -= 1
            elif ticket.state in (PENDING, REQUESTED):
                self._forget_pending(ticket)
            ticket.state = CLOSED

    def log_refusal(self, address: str, why: str) -> None:
        """A connection closed at accept (throttled: see REFUSAL_LOG_INTERVAL_SECONDS)."""
        unlogged = self._unlogged_since_last("refused", address, why)
        if unlogged is not None:
            logger.warning(
                "event=dicom_connection_refused peer=%s reason=%s pending=%d associations=%d "
                "unlogged_since_last=%d",
                address,
                why,
                self._pending,
                self._associations,
                unlogged,
            )

    def log_drop(self, address: str, why: str, *, received_bytes: int) -> None:
        """A connection ended before its association request was complete (throttled too)."""
        unlogged = self._unlogged_since_last("dropped", address, why)
        if unlogged is not None:
            logger.warning(
                "event=dicom_connection_dropped peer=%s reason=%s received_bytes=%d deadline_seconds=%g "
                "unlogged_since_last=%d",
                address,
                why,
                received_bytes,
                self.associate_deadline_seconds,
                unlogged,
            )

    def _unlogged_since_last(self, event: str, address: str, why: str) -> int | None:
        """None while this (event, address, reason) was logged less than the interval ago (and
        count it); else how many went unlogged since, the clock restarting now."""
        now = self._clock()
        key = (event, address, why)
        with self._lock:
            last, unlogged = self._logged.get(key, (float("-inf"), 0))
            if now - last < REFUSAL_LOG_INTERVAL_SECONDS:
                self._logged[key] = (last, unlogged + 1)
                return None
            if len(self._logged) >= _LOGGED_KEYS:
                self._logged.clear()
            self._logged[key] = (now, 0)
        return unlogged

    def _forget_pending(self, ticket: Ticket) -> None:
        if ticket.state not in (PENDING, REQUESTED):
            return
        self._pending -= 1
        self._pending_by_address[ticket.address] -= 1
        if self._pending_by_address[ticket.address] <= 0:
            del self._pending_by_address[ticket.address]


def may_be_sender(address: str, hosts: Iterable[str]) -> bool:
    """Whether a peer at `address` may be one of the enabled senders whose `allowed_host`s are given.

    Only where there is at least one enabled sender and every one is tied to a host or network can
    an address be ruled out before it says who it is; a sender allowed from anywhere (or none at
    all: the association is then refused with its reason) rules nothing out."""
    hosts = list(hosts)
    if not hosts or not all(hosts):
        return True
    networks = []
    for host in hosts:
        try:
            networks.append(ipaddress.ip_network(host, strict=False))
        except ValueError:
            continue  # validated when saved; a malformed row admits no one
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer in network for network in networks)
