"""The receiver's gate on its own: admission at accept, pending and association accounting,
deadlines, and which addresses may be a sender. Nothing running."""

from __future__ import annotations

import pytest

from backend.dicomnet.gate import (
    ADDRESS_NOT_A_SENDER,
    TOO_MANY_PENDING,
    TOO_MANY_PENDING_FROM_ADDRESS,
    Gate,
    may_be_sender,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gate(clock=None, **limits) -> Gate:
    options = {
        "max_associations": 2,
        "max_pending": 5,
        "max_pending_per_address": 3,
        "associate_deadline_seconds": 10.0,
    }
    options.update(limits)
    return Gate(**options, clock=clock) if clock else Gate(**options)


def test_pending_connections_are_limited_per_address_and_in_all():
    gate = _gate()
    tickets = [gate.admit("10.0.0.1")[0] for _ in range(3)]
    assert all(tickets)
    assert gate.admit("10.0.0.1") == (None, TOO_MANY_PENDING_FROM_ADDRESS)
    assert gate.admit("10.0.0.2")[0] is not None
    assert gate.admit("10.0.0.3")[0] is not None
    assert gate.admit("10.0.0.4") == (None, TOO_MANY_PENDING)
    assert gate.pending == 5
    gate.release(tickets[0])
    assert gate.admit("10.0.0.1")[0] is not None


def test_pending_connections_do_not_count_against_the_association_limit():
    gate = _gate(max_pending=10, max_pending_per_address=10)
    idle = [gate.admit("10.0.0.9")[0] for _ in range(8)]
    assert all(idle)
    sender, _ = gate.admit("10.0.0.1")
    gate.request_received(sender)
    assert gate.associate(sender)
    assert (gate.pending, gate.associations) == (8, 1)


def test_past_the_association_limit_a_sender_is_refused_until_one_ends():
    gate = _gate()
    first, second, third = (gate.admit(f"10.0.0.{n}")[0] for n in range(3))
    assert gate.associate(first) and gate.associate(second)
    assert not gate.associate(third)
    assert (gate.pending, gate.associations) == (1, 2)
    gate.release(first)
    assert gate.associate(third)
    assert (gate.pending, gate.associations) == (0, 2)


def test_release_is_idempotent_and_frees_what_the_ticket_held():
    gate = _gate()
    pending, _ = gate.admit("10.0.0.1")
    associated, _ = gate.admit("10.0.0.1")
    gate.associate(associated)
    for _ in range(2):
        gate.release(pending)
        gate.release(associated)
    assert (gate.pending, gate.associations) == (0, 0)
    assert not gate.associate(pending)  # a closed connection never becomes an association


def test_the_deadline_runs_from_accept_whatever_happens_meanwhile():
    clock = Clock()
    gate = _gate(clock)
    ticket, _ = gate.admit("10.0.0.1")
    assert gate.remaining(ticket) == 10.0
    clock.now += 9.5
    gate.admit("10.0.0.1")  # other connections, bytes received: nothing moves it
    assert gate.remaining(ticket) == 0.5
    clock.now += 0.5
    assert gate.remaining(ticket) <= 0


def test_a_request_received_stays_pending_until_it_names_a_sender():
    gate = _gate()
    ticket, _ = gate.admit("10.0.0.1")
    gate.request_received(ticket)
    assert (gate.pending, gate.associations) == (1, 0)
    assert gate.associate(ticket)
    assert (gate.pending, gate.associations) == (0, 1)


def test_refusals_are_logged_once_per_address_and_reason_per_interval(caplog):
    clock = Clock()
    gate = _gate(clock, max_pending_per_address=1)
    gate.admit("10.0.0.1")
    caplog.set_level("WARNING", logger="backend.dicomnet.gate")
    for _ in range(50):
        gate.admit("10.0.0.1")
    gate.log_refusal("10.0.0.7", ADDRESS_NOT_A_SENDER)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "peer=10.0.0.1 reason=too_many_pending_from_address" in lines[0]
    assert "peer=10.0.0.7 reason=address_not_a_sender" in lines[1]
    clock.now += 11
    gate.admit("10.0.0.1")
    assert "unlogged_since_last=49" in caplog.records[-1].getMessage()


def test_drops_are_throttled_apart_from_refusals(caplog):
    clock = Clock()
    gate = _gate(clock)
    caplog.set_level("WARNING", logger="backend.dicomnet.gate")
    gate.log_refusal("10.0.0.1", TOO_MANY_PENDING)
    for _ in range(3):
        gate.log_drop("10.0.0.1", "associate_deadline", received_bytes=5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert (
        "event=dicom_connection_dropped peer=10.0.0.1 reason=associate_deadline received_bytes=5" in lines[1]
    )
    clock.now += 11
    gate.log_drop("10.0.0.1", "associate_deadline", received_bytes=0)
    assert "unlogged_since_last=2" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    ("address", "hosts", "expected"),
    [
        ("10.20.0.5", ["10.20.0.0/16"], True),
        ("10.30.0.5", ["10.20.0.0/16", "192.168.1.7"], False),
        ("192.168.1.7", ["10.20.0.0/16", "192.168.1.7"], True),
        ("::ffff:10.20.0.5", ["10.20.0.0/16"], True),  # a dual-stack socket's IPv4 peer
        ("2001:db8::1", ["2001:db8::/32"], True),
        ("10.30.0.5", ["10.20.0.0/16", ""], True),  # one sender may connect from anywhere
        ("10.30.0.5", [], True),  # no sender at all: the association is refused with its reason
        ("10.30.0.5", ["not-an-address"], False),
        ("not-an-address", ["10.20.0.0/16"], False),
    ],
)
def test_which_addresses_may_be_a_sender(address, hosts, expected):
    assert may_be_sender(address, hosts) is expected
