"""Recording audit events. Views and admin actions describe the actor (`Actor`); services of
other apps never see a request.

Writes (a job created, requeued, failed; a key made or revoked) are recorded at once.
Reads (a job polled, a list fetched) are many: they are buffered per process and
written in one bulk insert every READS_FLUSH_SIZE events or READS_FLUSH_SECONDS,
whichever comes first, on the next read, so polling pays an append to a list, not
an INSERT. A crash loses at most that buffer of read events; writes are never buffered.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.utils import timezone

from backend.audit.models import AuditEvent

logger = logging.getLogger(__name__)

READS_FLUSH_SIZE = 200
READS_FLUSH_SECONDS = 5.0


@dataclass(frozen=True)
class Actor:
    kind: str  # "api_key" | "admin" | "command"
    client_id: uuid.UUID | None = None
    api_key_prefix: str = ""
    user: str = ""
    address: str | None = None
    request_id: str = ""


@dataclass
class _ReadBuffer:
    events: list[AuditEvent] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


_reads = _ReadBuffer()


def _event(actor: Actor, action: str, job_id: uuid.UUID | None, details: dict | None) -> AuditEvent:
    return AuditEvent(
        at=timezone.now(),
        action=action,
        actor=actor.kind,
        client_id=actor.client_id,
        api_key_prefix=actor.api_key_prefix,
        user=actor.user,
        job_id=job_id,
        address=actor.address,
        request_id=actor.request_id[:64],
        details=details or {},
    )


def audit_write(
    *, actor: Actor, action: str, job_ids: Iterable[uuid.UUID] = (None,), details: dict | None = None
) -> None:
    """Record an action that changed something, at once (one row per job)."""
    AuditEvent.objects.bulk_create([_event(actor, action, job_id, details) for job_id in job_ids])


def audit_read(
    *, actor: Actor, action: str, job_id: uuid.UUID | None = None, details: dict | None = None
) -> None:
    """Record a read; written with the next batch of reads (see the module's note)."""
    event = _event(actor, action, job_id, details)
    with _reads.lock:
        _reads.events.append(event)
        due = len(_reads.events) >= READS_FLUSH_SIZE or time.monotonic() - _reads.since >= READS_FLUSH_SECONDS
    if due:
        flush_reads()


def flush_reads() -> int:
    with _reads.lock:
        events, _reads.events, _reads.since = _reads.events, [], time.monotonic()
    if events:
        try:
            AuditEvent.objects.bulk_create(events)
        except Exception:
            logger.warning("event=audit_reads_lost count=%d", len(events), exc_info=True)
            return 0
    return len(events)


def drop_buffered_reads() -> int:
    """Forget the read events not yet written (tests: one test's reads must not be written into the
    next test's database). The number dropped."""
    with _reads.lock:
        dropped, _reads.events, _reads.since = len(_reads.events), [], time.monotonic()
    return dropped
