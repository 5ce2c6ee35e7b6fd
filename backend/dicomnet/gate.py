"""Who may hold a connection to the DICOM receiver before saying who it is, and for how long.

pynetdicom starts an association thread for every TCP connection and counts those threads against
its association limit, whether or not the peer has sent anything: connections that say nothing, or
trickle an A-ASSOCIATE-RQ a byte at a time, fill the limit and every registered sender is refused
(rejected-transient, local limit exceeded). The gate keeps the two apart:

- A *pending* connection has been accepted but not identified. Each one is admitted at accept
  within a limit per peer address and a limit in all (past either it is closed before a byte is
  read), and must complete its association request within a deadline counted from accept, not
  reset by each byte (as the HTTP edge bounds a request head: backend/edge/protocol.py). Past the
  deadline its socket is shut down, which also wakes a read blocked on a trickled PDU.
- An *association* is a connection whose request named an enabled sender. Only these count
  against the association limit.

Where every enabled sender is tied to a host or network, a connection from any other address
cannot be a sender and is refused at accept (`may_be_sender`); the ACSE look-up in scp.py still
decides who a peer is.

The scp.py server calls `admit` at accept, `request_received` once the request is complete,
`associate` once it named a sender, and `release` when the connection ends; `run` is the thread
that enforces deadlines.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
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
CLOSED = "closed"  # released, or dropped at its deadline: counted nowhere

# Refusal reasons, as they appear in logs.
TOO_MANY_PENDING = "too_many_pending"
TOO_MANY_PENDING_FROM_ADDRESS = "too_many_pending_from_address"
ADDRESS_NOT_A_SENDER = "address_not_a_sender"

# A refusal is logged once per (address, reason) this often, with how many went unlogged: a peer
# hammering the port cannot flood the log.
REFUSAL_LOG_INTERVAL_SECONDS = 10.0
_REFUSAL_LOG_KEYS = 1024


@dataclass(eq=False)
class Ticket:
    """One accepted connection, from admission to release."""

    address: str
    deadline: float
    on_expire: Callable[[], None]
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
        self._cond = threading.Condition()
        self._pending_by_address: Counter[str] = Counter()
        self._pending = 0
        self._associations = 0
        self._deadlines: list[tuple[float, int, Ticket]] = []
        self._order = itertools.count()
        self._closed = False
        self._refusals_logged: dict[tuple[str, str], tuple[float, int]] = {}

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def associations(self) -> int:
        return self._associations

    def admit(self, address: str, *, on_expire: Callable[[], None]) -> tuple[Ticket | None, str]:
        """A ticket for a connection just accepted from `address`, or (None, why it is refused).

        `on_expire` is called (from the deadline thread, without the gate's lock) if the
        association request is not complete by the deadline."""
        with self._cond:
            if self._pending_by_address[address] >= self.max_pending_per_address:
                why = TOO_MANY_PENDING_FROM_ADDRESS
            elif self._pending >= self.max_pending:
                why = TOO_MANY_PENDING
            else:
                deadline = self._clock() + self.associate_deadline_seconds
                ticket = Ticket(address=address, deadline=deadline, on_expire=on_expire)
                self._pending += 1
                self._pending_by_address[address] += 1
                heapq.heappush(self._deadlines, (ticket.deadline, next(self._order), ticket))
                if len(self._deadlines) == 1:
                    self._cond.notify()  # the deadline thread may be waiting with nothing to do
                return ticket, ""
        self.log_refusal(address, why)
        return None, why

    def request_received(self, ticket: Ticket) -> None:
        """The association request is complete: its deadline no longer applies."""
        with self._cond:
            if ticket.state == PENDING:
                ticket.state = REQUESTED

    def associate(self, ticket: Ticket) -> bool:
        """The request named an enabled sender: count it as an association, if one is free.

        False (and still pending) when the association limit is reached."""
        with self._cond:
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
        with self._cond:
            if ticket.state == ASSOCIATED:
                self._associations -= 1
            elif ticket.state in (PENDING, REQUESTED):
                self._forget_pending(ticket)
            ticket.state = CLOSED

    def expire_due(self) -> list[Ticket]:
        """Tickets past their deadline with the request still incomplete: no longer counted.

        The caller ends their connections (`run` calls each one's on_expire)."""
        expired: list[Ticket] = []
        with self._cond:
            now = self._clock()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, ticket = heapq.heappop(self._deadlines)
                if ticket.state == PENDING:
                    self._forget_pending(ticket)
                    ticket.state = CLOSED
                    expired.append(ticket)
        return expired

    def run(self) -> None:
        """Drop connections at their deadline until `close` is called (the deadline thread)."""
        while True:
            for ticket in self.expire_due():
                logger.warning(
                    "event=dicom_connection_dropped peer=%s reason=associate_deadline deadline_seconds=%g",
                    ticket.address,
                    self.associate_deadline_seconds,
                )
                try:
                    ticket.on_expire()
                except Exception as exc:  # noqa: BLE001 - one connection's trouble never stops the thread
                    logger.error("event=dicom_connection_drop_failed peer=%s error=%s", ticket.address, exc)
            with self._cond:
                if self._closed:
                    return
                wait = self._deadlines[0][0] - self._clock() if self._deadlines else None
                if wait is None or wait > 0:
                    self._cond.wait(timeout=wait)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def log_refusal(self, address: str, why: str) -> None:
        now = self._clock()
        key = (address, why)
        with self._cond:
            last, unlogged = self._refusals_logged.get(key, (float("-inf"), 0))
            if now - last < REFUSAL_LOG_INTERVAL_SECONDS:
                self._refusals_logged[key] = (last, unlogged + 1)
                return
            if len(self._refusals_logged) >= _REFUSAL_LOG_KEYS:
                self._refusals_logged.clear()
            self._refusals_logged[key] = (now, 0)
        logger.warning(
            "event=dicom_connection_refused peer=%s reason=%s pending=%d associations=%d unlogged_since_last=%d",
            address,
            why,
            self._pending,
            self._associations,
            unlogged,
        )

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
