"""The two ways a job's status changes after its claim: back to the queue, or to an end.

Every service that moves a job calls one of these with a queryset already
guarded by the statuses (and claim token) the move is allowed from, so each
move is one `UPDATE ... WHERE id IN (...) AND status IN (allowed) ...`; nothing
reads a status and writes it back. The fields set are the same every time:

- to the queue: nobody holds the job (claim fields cleared);
- to an end (SUCCEEDED, FAILED or CANCELLED): finished_at set, token and lease cleared
  (claimed_by and batch_id stay as the record of the last holder), and the
  error fields set on failure and cleared on success, so a job that succeeded
  after a lease expiry or a retry carries no stale error.

When a guard matches fewer rows than the caller expected, the move is logged
with its name: somebody else moved the job first (a reaper, an operator), or
the claim was lost.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from backend.jobs.events import announce_ended
from backend.jobs.models import Job, JobStatus, Transition
from backend.pacs import services as pacs
from backend.webhooks import services as webhooks

logger = logging.getLogger(__name__)

ERROR_CODE_MAX = 64
ERROR_MESSAGE_MAX = 2000

# What "nobody holds this job" means: set whenever a job goes back to the queue.
UNCLAIMED: dict[str, Any] = {
    "claimed_by": "",
    "claim_token": None,
    "lease_expires_at": None,
    "batch_id": None,
}
# On a terminal move the holder's token and lease go; who ran it last stays for the record.
_RELEASED = {"claim_token": None, "lease_expires_at": None}


def _checked(updated: int, *, expected: int | None, transition: Transition) -> int:
    if expected is not None and updated < expected:
        logger.warning(
            "event=transition_guard_missed transition=%s expected=%d updated=%d",
            transition.value,
            expected,
            updated,
        )
    return updated


def to_queue(
    jobs: QuerySet[Job], *, transition: Transition, expected: int | None = None, **fields: Any
) -> int:
    """Put guarded jobs back in the queue, unclaimed. `fields`: attempts, backoff, error, ...
    A job whose client asked to cancel it ends CANCELLED instead: it never goes back."""
    assert transition in Transition.requeues(), transition
    discarded = discard_cancelled(jobs)
    updated = jobs.filter(cancel_requested_at__isnull=True).update(
        status=JobStatus.QUEUED, **UNCLAIMED, **fields
    )
    return _checked(updated + discarded, expected=expected, transition=transition)


def discard_cancelled(jobs: QuerySet[Job]) -> int:
    """End the guarded jobs whose cancel was requested while they ran: CANCELLED, no result."""
    return to_terminal(
        jobs.filter(cancel_requested_at__isnull=False),
        transition=Transition.DISCARD,
        status=JobStatus.CANCELLED,
        error_code=CANCELLED_CODE,
        error_message="Cancelled by the client while in progress; the result was discarded.",
    )


CANCELLED_CODE = "cancelled"


def to_terminal(
    jobs: QuerySet[Job],
    *,
    transition: Transition,
    status: JobStatus,
    error_code: str = "",
    error_message: str = "",
    expected: int | None = None,
    now: datetime | None = None,
    **fields: Any,
) -> int:
    """Finish guarded jobs: SUCCEEDED (no error), FAILED or CANCELLED (with a code and message)."""
    assert status in (JobStatus.SUCCEEDED, *JobStatus.ended_without_result()), status
    assert (status != JobStatus.SUCCEEDED) == bool(error_code), "an end without a result has a code"
    # A job whose cancel was requested ends CANCELLED whatever end it was heading for.
    discarded = 0 if status == JobStatus.CANCELLED else discard_cancelled(jobs)
    if status != JobStatus.CANCELLED:
        jobs = jobs.filter(cancel_requested_at__isnull=True)
    # Who is ending, for the clients waiting on them (events.py): read before the move, and
    # the move limited to these rows, under the same guard.
    ending = dict(jobs.values_list("id", "callback_url"))
    if not ending:
        return _checked(discarded, expected=expected, transition=transition)
    jobs = jobs.filter(id__in=list(ending))
    with transaction.atomic():  # the move and its webhook deliveries, or neither
        updated = jobs.update(
            status=status,
            finished_at=now or timezone.now(),
            error_code=error_code[:ERROR_CODE_MAX],
            error_message=error_message[:ERROR_MESSAGE_MAX],
            **_RELEASED,
            **fields,
        )
        callbacks = {job_id: url for job_id, url in ending.items() if url}
        if callbacks and updated < len(ending):
            # Somebody moved one of them between the read and the move: announce only ours.
            moved = Job.objects.filter(id__in=list(callbacks), status=status).values_list("id", flat=True)
            callbacks = {job_id: callbacks[job_id] for job_id in moved}
        # The deliveries are rows in this transaction; the network comes after it, elsewhere.
        webhooks.schedule(callbacks.items(), status=status)
        if status == JobStatus.SUCCEEDED:  # its SR back to the sender's PACS, for a DICOM job
            pacs.schedule(ending)
    announce_ended(ending)  # after the move: at commit inside a transaction, at once outside
    return _checked(updated + discarded, expected=expected, transition=transition)
