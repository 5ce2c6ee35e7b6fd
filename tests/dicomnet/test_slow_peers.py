"""Peers that connect and say nothing, or trickle their association request, against a real
`run_dicom` process: they cannot keep a registered sender out, and are dropped at the deadline.

The misbehaving connections come from other loopback addresses (127.0.0.2 and up: all of
127.0.0.0/8 is this host on Linux) and all go to 127.0.0.1; the sender sends from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from backend.dicomnet import services
from backend.jobs.models import Job
from tests.dicomnet.factories import CALLED_AE, cr_chest, echoscu, storescu, write

pytestmark = pytest.mark.django_db(transaction=True)


def _associate_rq(calling: str = "MODALITY") -> bytes:
    """A well-formed A-ASSOCIATE-RQ PDU (Verification), as a sender's first bytes."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = CALLED_AE
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16382
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    primitive.user_information = [max_length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the receiver closes `sock` within `within` seconds (it never answers these peers)."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) != b""
    except BlockingIOError:
        return True  # nothing to read, and not closed
    except OSError:
        return False


class Trickle:
    """Sends an association request one byte at a time to each socket, `interval` seconds apart."""

    def __init__(self, sockets: list[socket.socket], interval: float) -> None:
        self.sockets = sockets
        self.request = _associate_rq()
        self.sent = [0] * len(sockets)
        self._interval = interval
        self._stop = threading.Event()
        self._begun = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        live = set(range(len(self.sockets)))
        for byte in range(len(self.request)):
            for n in list(live):
                try:
                    self.sockets[n].send(self.request[byte : byte + 1])
                    self.sent[n] += 1
                except OSError:
                    live.discard(n)  # the receiver closed it
            self._begun.set()
            if not live or self._stop.wait(self._interval):
                return

    def __enter__(self) -> Trickle:
        self._thread.start()
        assert self._begun.wait(timeout=30), "the first bytes were never sent"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def _sockets(port: int, sources: list[str]) -> Iterator[list[socket.socket]]:
    opened = [_connect(port, source) for source in sources]
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_idle_and_trickling_connections_do_not_keep_a_registered_sender_out(
    start_scp, sender, hospital, tmp_path
):
    # Long deadlines, so every one of them is still open while the sender stores: the store
    # succeeds because they are not counted as associations, not because they were dropped.
    scp = start_scp(CXRQ_DICOM_ASSOCIATE_DEADLINE_SECONDS=300, CXRQ_DICOM_ACSE_TIMEOUT_SECONDS=300)
    idle_sources = [f"127.0.0.{n}" for n in range(2, 52)]
    trickle_sources = [f"127.0.0.{n}" for n in range(52, 64)]
    path = write(tmp_path / "in", "pa.dcm", cr_chest(seed=4242))
    with (
        _sockets(scp.port, idle_sources) as idle,
        _sockets(scp.port, trickle_sources) as trickling,
        Trickle(trickling, interval=1.0) as trickle,
    ):
        assert all(trickle.sent)  # each one has started its request
        out = storescu(scp.port, path, aet="MODALITY")
        assert out.returncode == 0, out.stdout + out.stderr
        assert Job.objects.filter(client=hospital).count() == 1
        assert echoscu(scp.port, aet="MODALITY").returncode == 0
        # They were all there the whole time: none finished its request, none was closed.
        assert all(sent < len(trickle.request) for sent in trickle.sent)
        assert all(_still_open(sock) for sock in idle + trickling)
    assert "Local Limit Exceeded" not in scp.log
    assert "reason=too_many_associations" not in scp.log


def test_a_trickled_request_and_a_silent_connection_are_dropped_at_the_deadline(start_scp, sender):
    scp = start_scp(CXRQ_DICOM_ASSOCIATE_DEADLINE_SECONDS=2)
    with _sockets(scp.port, ["127.0.0.2", "127.0.0.3"]) as (trickling, idle):
        # One byte every 0.2 s: each byte well within any idle timeout, the whole request ~54 s.
        with Trickle([trickling], interval=0.2) as trickle:
            assert _closed_by_peer(trickling, within=30)
            assert trickle.sent[0] < len(trickle.request)  # dropped while still trickling
        assert _closed_by_peer(idle, within=30)
    assert "event=dicom_connection_dropped peer=127.0.0.2 reason=associate_deadline" in scp.log
    assert "event=dicom_connection_dropped peer=127.0.0.3 reason=associate_deadline" in scp.log
    assert scp.alive
    assert echoscu(scp.port, aet="MODALITY").returncode == 0


def test_a_lower_acse_timeout_still_bounds_the_wait_for_the_request(start_scp, sender):
    scp = start_scp(CXRQ_DICOM_ACSE_TIMEOUT_SECONDS=1.5)
    with _sockets(scp.port, ["127.0.0.2"]) as (idle,):
        assert _closed_by_peer(idle, within=30)
    assert "peer=127.0.0.2 reason=associate_deadline received_bytes=0 deadline_seconds=1.5" in scp.log


def test_an_association_request_claiming_gigabytes_is_not_read(start_scp, sender):
    scp = start_scp(CXRQ_DICOM_ASSOCIATE_DEADLINE_SECONDS=300, CXRQ_DICOM_ACSE_TIMEOUT_SECONDS=300)
    with _sockets(scp.port, ["127.0.0.2"]) as (huge,):
        huge.sendall(b"\x01\x00" + (2**31).to_bytes(4, "big") + _associate_rq()[6:])
        assert _closed_by_peer(huge, within=30)  # at once, long before the deadline
    assert "event=dicom_connection_dropped peer=127.0.0.2 reason=associate_request_too_large" in scp.log
    assert echoscu(scp.port, aet="MODALITY").returncode == 0


def test_pending_connections_from_one_address_are_limited_at_accept(start_scp, sender):
    scp = start_scp(CXRQ_DICOM_MAX_PENDING_PER_ADDRESS=3)
    with _sockets(scp.port, ["127.0.0.2"] * 4) as (*admitted, extra):
        assert _closed_by_peer(extra, within=10)  # closed at once, not at a timeout
        assert all(_still_open(sock) for sock in admitted)
        assert echoscu(scp.port, aet="MODALITY").returncode == 0  # another address is served
    assert "event=dicom_connection_refused peer=127.0.0.2 reason=too_many_pending_from_address" in scp.log


def _echo_from(port: int, source: str, calling: str):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title=CALLED_AE, bind_address=(source, 0))


def test_where_every_sender_has_a_host_other_addresses_are_refused_at_accept(start_scp, sender, hospital):
    sender.allowed_host = "127.0.0.1"
    sender.save()
    scp = start_scp()
    with _sockets(scp.port, ["127.0.0.2"]) as (stranger,):
        assert _closed_by_peer(stranger, within=10)
    assert "event=dicom_connection_refused peer=127.0.0.2 reason=address_not_a_sender" in scp.log
    assert echoscu(scp.port, aet="MODALITY").returncode == 0  # from 127.0.0.1

    # A sender that may connect from anywhere: nobody can be ruled out at accept any more, and
    # the association's look-up still holds each sender to its own host.
    services.sender_add(ae_title="ANYWHERE", client=hospital)
    anywhere = _echo_from(scp.port, "127.0.0.2", "ANYWHERE")
    assert anywhere.is_established
    anywhere.release()
    misplaced = _echo_from(scp.port, "127.0.0.2", "MODALITY")
    assert misplaced.is_rejected
    assert "calling_ae=MODALITY peer=127.0.0.2 reason=address_not_allowed" in scp.log


@pytest.mark.parametrize(
    ("setting", "value"),
    [("CXRQ_DICOM_MAX_PENDING_PER_ADDRESS", "0"), ("CXRQ_DICOM_ASSOCIATE_DEADLINE_SECONDS", "0")],
)
def test_a_gate_that_would_admit_no_one_or_never_drop_anyone_does_not_start(start_scp, setting, value):
    with pytest.raises(RuntimeError, match=setting):
        start_scp(**{setting: value})
