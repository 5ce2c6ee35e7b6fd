"""The DICOM receiver: a C-STORE / C-ECHO SCP (pynetdicom) in its own process (`manage.py run_dicom`).

Connection: admitted at accept by the gate (backend/dicomnet/gate.py): within
CXRQ_DICOM_MAX_PENDING_PER_ADDRESS and CXRQ_DICOM_MAX_PENDING connections not yet identified, and,
where every enabled sender is tied to a host or network, only from one of those; else closed
before a byte is read. Its whole A-ASSOCIATE-RQ must arrive within
CXRQ_DICOM_ASSOCIATE_DEADLINE_SECONDS of accept (not reset by each byte) and within
MAX_ASSOCIATE_REQUEST_BYTES, else it is dropped; it is read by the connection's own thread, and
only then does pynetdicom start an association for it.

Association: the calling AE title (and, where configured, the peer's address) must be an enabled
DicomSender, else A-ASSOCIATE-RJ (rejected-permanent, service-user, calling AE title not
recognised); the called AE title must be ours (called AE title not recognised); past
CXRQ_DICOM_MAX_ASSOCIATIONS associations with senders at once, rejected-transient, local limit
exceeded (connections not yet identified are counted apart, so they cannot fill it). DIMSE and
network timeouts drop an association that stops sending. A dataset still arriving
past CXRQ_UPLOAD_MAX_BYTES (and its PDU headers) has its connection closed (A-P-ABORT) before it
is held in memory, as an HTTP upload that large is cut off.

C-STORE: every storage SOP class pynetdicom knows is accepted, since a PACS sends whole studies
(the image classes intake reads in the transfer syntaxes it decodes, the others in any syntax but
a deflated dataset). The encoded dataset is written back to a Part 10 file (preamble and file meta,
no re-encoding) and sorted by services.instance_receive: an eligible image becomes a job through
the HTTP upload's intake (event=dicom_stored); an instance not scored (not a chest X-ray, not an
image, cxrq's own output, a duplicate) is answered with success and recorded with its reason
(event=dicom_unscored). A corrupt or truncated instance, or one refused for a limit or a full
queue, is a DIMSE failure status with the code as Error Comment, logged as event=dicom_refused. No
exception ends the process: an unexpected one is 0x0110 (processing failure), logged with its type.

Every association runs in its own thread with its own database connection, closed when it ends.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid

from django.conf import settings
from django.db import connections
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.acse import ACSE
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from backend.core.exceptions import ApplicationError
from backend.core.logging import request_id_var
from backend.dicomnet import selectors, services
from backend.dicomnet.gate import ADDRESS_NOT_A_SENDER, Gate, Ticket, may_be_sender
from backend.dicomnet.instances import DEFLATED_DATASET_SYNTAXES
from backend.jobs import dicom as intake_dicom

logger = logging.getLogger(__name__)
# pynetdicom's own INFO/DEBUG lines quote request attributes (SOP Instance UIDs, and at DEBUG whole
# PDUs): ours say what happened without them.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
UNSUPPORTED_ENCODING = 0xC002
OVER_LIMITS = 0xC003
UNSUPPORTED_PIXELS = 0xC004

# Refusal codes -> C-STORE failure statuses (PS3.4 Table B.2-1): out of resources for a full
# queue (the sender retries later), "does not match SOP class" for a dataset that is not what its
# request says, and the "cannot understand" range, by kind, for everything else. What is not
# scored but well formed (not a chest X-ray, not an image, multi-frame, colour, ...) is no refusal:
# it is answered with success and recorded (services.instance_receive).
STATUS_FOR_CODE: dict[str, int] = {
    "queue_full": OUT_OF_RESOURCES,
    "client_queue_full": OUT_OF_RESOURCES,
    "dicom_dataset_mismatch": DATASET_MISMATCH,
    "dicom_unreadable": CANNOT_UNDERSTAND,
    "invalid_image": CANNOT_UNDERSTAND,
    "dicom_unsupported_transfer_syntax": UNSUPPORTED_ENCODING,
    "file_too_large": OVER_LIMITS,
    "dicom_header_too_large": OVER_LIMITS,
    "dicom_inflated_too_large": OVER_LIMITS,
    "dicom_no_pixel_data": UNSUPPORTED_PIXELS,
}

# The image classes intake scores, in the transfer syntaxes it decodes (Deflated too: the dataset
# is kept encoded and intake inflates it with a bound); a sender transcodes to one of them.
SCORED_SOP_CLASSES = tuple(intake_dicom.IMAGE_SOP_CLASSES)
TRANSFER_SYNTAXES = (*intake_dicom.TRANSFER_SYNTAXES, intake_dicom.DEFLATED)
# Every other storage class is accepted to be recorded, not scored: its pixels are never decoded,
# so any transfer syntax will do but a deflated dataset (read only by intake, with its bound).
# An acceptor may support more than the 128 presentation contexts one association can propose.
RECORDED_SOP_CLASSES = tuple(
    cx.abstract_syntax
    for cx in AllStoragePresentationContexts
    if cx.abstract_syntax not in SCORED_SOP_CLASSES
)
RECORDED_TRANSFER_SYNTAXES = tuple(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in DEFLATED_DATASET_SYNTAXES)
STORAGE_SOP_CLASSES = (*SCORED_SOP_CLASSES, *RECORDED_SOP_CLASSES)

REJECT_PERMANENT, REJECT_TRANSIENT = 0x01, 0x02
SOURCE_SERVICE_USER, SOURCE_SERVICE_PROVIDER_PRESENTATION = 0x01, 0x03
REASON_CALLING_AE_NOT_RECOGNISED = 0x03
REASON_LOCAL_LIMIT_EXCEEDED = 0x02
# pynetdicom counts every connection's thread against its own association limit, identified or
# not: that count is what let idle peers shut the receiver. The gate counts instead, so
# pynetdicom's limit is set out of reach.
_PYNETDICOM_ASSOCIATIONS_UNBOUNDED = 2**31 - 1
# The largest association request read from a peer that has not yet said who it is: pynetdicom
# would read whatever length a PDU's header claims (up to 4 GiB) into memory, while a real request,
# even one proposing 128 presentation contexts with many transfer syntaxes each, is a few hundred KiB.
MAX_ASSOCIATE_REQUEST_BYTES = 1024 * 1024
PDU_HEADER_BYTES = 6  # type, reserved, length (4 bytes, big-endian)


P_DATA_TF = b"\x04"


def _dataset_bytes_limit() -> int:
    """How many P-DATA bytes one C-STORE may take: an upload's limit, plus its PDU and PDV headers."""
    return settings.UPLOAD_MAX_BYTES + settings.UPLOAD_MAX_BYTES // 64 + 65536


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def _close_db() -> None:
    connections.close_all()  # this thread's connections only


class _SenderACSE(ACSE):
    """pynetdicom's acceptor negotiation, after a look-up of the calling AE title among the senders
    and, for a sender, a place among the associations the gate allows."""

    def _negotiate_as_acceptor(self) -> None:
        request = self.requestor.primitive
        calling = str(request.calling_ae_title or "").strip()
        address = str(self.assoc.requestor.address or "")
        gate: Gate = self.assoc.cxrq_gate
        ticket: Ticket = self.assoc.cxrq_ticket
        try:
            sender, why = services.sender_for(ae_title=calling, address=address)
        finally:
            _close_db()
        self.requestor.ae_title = request.calling_ae_title
        if sender is None:
            logger.warning(
                "event=dicom_association_rejected calling_ae=%s peer=%s reason=%s", calling, address, why
            )
            self._reject(REJECT_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLING_AE_NOT_RECOGNISED)
            return None
        if not gate.associate(ticket):
            logger.warning(
                "event=dicom_association_rejected calling_ae=%s peer=%s reason=too_many_associations active=%d",
                calling,
                address,
                gate.associations,
            )
            self._reject(REJECT_TRANSIENT, SOURCE_SERVICE_PROVIDER_PRESENTATION, REASON_LOCAL_LIMIT_EXCEEDED)
            return None
        self.assoc.cxrq_sender = sender
        return super()._negotiate_as_acceptor()

    def _reject(self, result: int, source: int, reason: int) -> None:
        self.send_reject(result, source, reason)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()


class _GatedServer(ThreadedAssociationServer):
    """Asks the gate at accept, before a thread is started or a byte is read."""

    gate: Gate
    # socketserver's listen backlog is 5: a burst of connections would leave a sender's SYN to be
    # retried a second later. The gate, not the backlog, decides who is served.
    request_queue_size = 128
    # A connection's own thread only waits for its association request (bounded by the deadline);
    # stopping never waits for it. pynetdicom's association threads are stopped by ae.shutdown().
    daemon_threads = True
    block_on_close = False

    def __init__(self, *args, **kwargs) -> None:
        self._tickets: dict[socket.socket, Ticket] = {}
        super().__init__(*args, **kwargs)

    def verify_request(self, request, client_address) -> bool:
        ticket, _ = self.gate.admit(str(client_address[0]))
        if ticket is None:
            return False  # socketserver closes it
        self._tickets[request] = ticket
        return True

    def take_ticket(self, request) -> Ticket:
        return self._tickets.pop(request)

    def shutdown_request(self, request) -> None:
        # Also where socketserver ends a connection whose thread could not be started.
        ticket = self._tickets.pop(request, None)
        if ticket is not None:
            self.gate.release(ticket)
        super().shutdown_request(request)


class _PrereadSocket(AssociationSocket):
    """pynetdicom's socket wrapper, handing out first the association request scp.py has read."""

    cxrq_preread: bytearray

    @property
    def ready(self) -> bool:
        return bool(self.cxrq_preread) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        if not self.cxrq_preread:
            return super().recv(nr_bytes)
        taken = self.cxrq_preread[:nr_bytes]
        del self.cxrq_preread[:nr_bytes]
        if len(taken) < nr_bytes:
            taken += super().recv(nr_bytes - len(taken))
        return taken


class _RequestHandler(RequestHandler):
    """One connection, in its own thread: the gate's checks, then the association request read
    here, within the deadline, and only then pynetdicom's association (whose threads poll)."""

    server: _GatedServer

    def handle(self) -> None:
        gate, sock = self.server.gate, self.request
        self.cxrq_ticket = ticket = self.server.take_ticket(sock)
        address = str(self.client_address[0])
        if not _may_be_sender(address):
            gate.log_refusal(address, ADDRESS_NOT_A_SENDER)
            self.server.shutdown_request(sock)
            gate.release(ticket)
            return
        self.cxrq_request = _read_associate_request(sock, gate, ticket)
        if self.cxrq_request is None:
            self.server.shutdown_request(sock)
            gate.release(ticket)
            return
        gate.request_received(ticket)
        try:
            super().handle()
        except BaseException:
            gate.release(ticket)
            raise

    def _create_association(self):
        assoc = super()._create_association()
        assoc.acse = _SenderACSE(assoc)
        # pynetdicom builds its socket wrapper itself (and queues the connection's event); only
        # where the first bytes come from changes, so the wrapper is given that class in place.
        assoc.dul.socket.__class__ = _PrereadSocket
        assoc.dul.socket.cxrq_preread = bytearray(self.cxrq_request)
        assoc.cxrq_sender = None
        gate, ticket = self.server.gate, self.cxrq_ticket
        assoc.cxrq_gate, assoc.cxrq_ticket = gate, ticket
        run = assoc.run

        def run_then_close() -> None:
            try:
                run()
            finally:
                gate.release(ticket)
                _close_db()

        assoc.run = run_then_close
        return assoc


def _read_associate_request(sock: socket.socket, gate: Gate, ticket: Ticket) -> bytes | None:
    """The first PDU (an A-ASSOCIATE-RQ from any real peer), whole, by the gate's deadline: None,
    logged, if it is late, claims more than MAX_ASSOCIATE_REQUEST_BYTES, or the peer goes away.
    Each read waits only for what is left of the deadline, so trickling gains nothing."""
    received = bytearray()
    needed = PDU_HEADER_BYTES
    why = ""
    try:
        while len(received) < needed:
            left = gate.remaining(ticket)
            if left <= 0:
                why = "associate_deadline"
                break
            sock.settimeout(left)
            chunk = sock.recv(min(needed - len(received), 65536))
            if not chunk:
                return None  # the peer closed it
            received += chunk
            if needed == PDU_HEADER_BYTES and len(received) == PDU_HEADER_BYTES:
                length = int.from_bytes(received[2:6], "big")
                if length > MAX_ASSOCIATE_REQUEST_BYTES:
                    why = "associate_request_too_large"
                    break
                needed += length
    except TimeoutError:
        why = "associate_deadline"
    except OSError:
        return None
    if why:
        gate.log_drop(ticket.address, why, received_bytes=len(received))
        return None
    sock.settimeout(None)  # pynetdicom reads a blocking socket
    return bytes(received)


def _may_be_sender(address: str) -> bool:
    try:
        return may_be_sender(address, selectors.enabled_sender_hosts())
    except Exception as exc:  # noqa: BLE001 - the association's own look-up still decides
        logger.error("event=dicom_sender_hosts_failed peer=%s error=%s", address, type(exc).__name__)
        return True
    finally:
        _close_db()


def handle_echo(event) -> int:  # noqa: ARG001 - pynetdicom's handler signature
    return SUCCESS


def count_received(event) -> None:
    """Runs as each PDU arrives: a dataset past the limit ends the connection now, not once held."""
    data = event.data
    if data[:1] != P_DATA_TF:
        return
    assoc = event.assoc
    assoc.cxrq_pending_bytes = getattr(assoc, "cxrq_pending_bytes", 0) + len(data)
    if assoc.cxrq_pending_bytes > _dataset_bytes_limit() and not getattr(assoc, "cxrq_cut_off", False):
        assoc.cxrq_cut_off = True
        logger.warning(
            "event=dicom_refused code=file_too_large status=abort calling_ae=%s max_bytes=%d",
            str(assoc.requestor.ae_title or "").strip(),
            settings.UPLOAD_MAX_BYTES,
        )
        sock = assoc.dul.socket
        if sock is not None:
            sock.close()  # the DUL sees the transport close: A-P-ABORT, the association ends


def handle_store(event) -> Dataset | int:
    sender = getattr(event.assoc, "cxrq_sender", None)
    calling = str(event.assoc.requestor.ae_title or "").strip()
    if sender is None:  # not reachable: negotiation refuses an association without one
        return _status(PROCESSING_FAILURE, "no_sender")
    event.assoc.cxrq_pending_bytes = 0  # this message is complete; the next one counts afresh
    request = event.request
    token = request_id_var.set(f"dicom-{uuid.uuid4().hex[:16]}")
    try:
        received = services.instance_receive(
            sender=sender,
            part10=event.encoded_dataset(include_meta=True),
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            peer_address=str(event.assoc.requestor.address or ""),
        )
    except ApplicationError as exc:
        status = STATUS_FOR_CODE.get(exc.code, CANNOT_UNDERSTAND)
        logger.warning(
            "event=dicom_refused code=%s status=0x%04X calling_ae=%s sop_class=%s",
            exc.code,
            status,
            calling,
            request.AffectedSOPClassUID,
        )
        return _status(status, exc.code)
    except Exception as exc:  # noqa: BLE001 - a refusal, never the end of the receiver
        # Never crash the receiver, and never log the exception's text: it may quote PHI.
        logger.error(
            "event=dicom_refused code=processing_failure status=0x%04X calling_ae=%s error=%s",
            PROCESSING_FAILURE,
            calling,
            type(exc).__name__,
        )
        return _status(PROCESSING_FAILURE, "processing_failure")
    finally:
        request_id_var.reset(token)
    if received.job is not None:
        logger.info(
            "event=dicom_stored job_id=%s calling_ae=%s client_id=%s deduplicated=%s",
            received.job.id,
            calling,
            sender.client_id,
            received.deduplicated,
        )
    if received.unscored is not None:
        row = received.unscored
        logger.info(
            "event=dicom_unscored reason=%s attribute=%s value=%s detail=%s calling_ae=%s client_id=%s "
            "sop_class=%s unscored_id=%s",
            row.reason,
            row.attribute or "-",
            row.value or "-",
            row.detail or "-",
            calling,
            sender.client_id,
            row.sop_class_uid or "-",
            row.id,
        )
    return SUCCESS


def application_entity() -> AE:
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.require_called_aet = settings.DICOM_REQUIRE_CALLED_AE_TITLE
    ae.maximum_associations = settings.DICOM_MAX_ASSOCIATIONS
    ae.maximum_pdu_size = settings.DICOM_MAX_PDU_BYTES
    ae.acse_timeout = settings.DICOM_ACSE_TIMEOUT_SECONDS
    ae.dimse_timeout = settings.DICOM_DIMSE_TIMEOUT_SECONDS
    ae.network_timeout = settings.DICOM_NETWORK_TIMEOUT_SECONDS
    ae.add_supported_context(Verification)
    for sop_class in SCORED_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    for sop_class in RECORDED_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(RECORDED_TRANSFER_SYNTAXES))
    return ae


HANDLERS = [
    (evt.EVT_C_ECHO, handle_echo),
    (evt.EVT_C_STORE, handle_store),
    (evt.EVT_DATA_RECV, count_received),
]


def serve(*, address: str, port: int, stop: threading.Event) -> None:
    """Listen until `stop` is set; then refuse new associations and end the ones in hand."""
    ae = application_entity()
    ae.maximum_associations = _PYNETDICOM_ASSOCIATIONS_UNBOUNDED
    gate = Gate(
        max_associations=settings.DICOM_MAX_ASSOCIATIONS,
        max_pending=settings.DICOM_MAX_PENDING,
        max_pending_per_address=settings.DICOM_MAX_PENDING_PER_ADDRESS,
        # The ACSE timeout bounded the wait for a request before there was a deadline; the
        # smaller of the two keeps a deployment that lowered it as strict as it was.
        associate_deadline_seconds=min(
            settings.DICOM_ASSOCIATE_DEADLINE_SECONDS, settings.DICOM_ACSE_TIMEOUT_SECONDS
        ),
    )
    server: _GatedServer = ae.make_server(
        (address, port),
        evt_handlers=HANDLERS,
        server_class=_GatedServer,
        request_handler=_RequestHandler,
    )
    server.gate = gate
    ae._servers.append(server)  # so ae.shutdown() stops it as it does its own
    thread = threading.Thread(target=server.serve_forever, name="dicom-scp", daemon=True)
    thread.start()
    logger.info(
        "event=dicom_listening ae_title=%s address=%s port=%d max_associations=%d max_pending=%d "
        "max_pending_per_address=%d associate_deadline_seconds=%g",
        settings.DICOM_AE_TITLE,
        address,
        server.server_address[1],
        gate.max_associations,
        gate.max_pending,
        gate.max_pending_per_address,
        gate.associate_deadline_seconds,
    )
    try:
        stop.wait()
    finally:
        ae.shutdown()
        thread.join(timeout=10)
        logger.info("event=dicom_stopped")
