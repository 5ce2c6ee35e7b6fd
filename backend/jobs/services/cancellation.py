"""A client cancels one of its jobs: a queued one at once, an in-progress one when its batch returns."""

from __future__ import annotations

import uuid

from django.db.models.functions import Coalesce, Now

from backend.clients.models import Client
from backend.jobs import errors, selectors
from backend.jobs.models import Job, JobStatus, Transition
from backend.jobs.services.transitions import CANCELLED_CODE, to_terminal


def job_cancel(*, client: Client, job_id: str | uuid.UUID) -> Job:
    """Cancel the client's job; 404 for another client's, 409 for one already ended.

    QUEUED -> CANCELLED now (it is never inferred). IN_PROGRESS: marked, and the move its
    batch makes next ends it CANCELLED with no result (services/transitions.py). Asking
    again is harmless: the answer is the job as it stands.
    """
    job = selectors.job_get(client=client, job_id=job_id)
    mine = Job.objects.filter(id=job.id, client=client)
    cancelled = to_terminal(
        mine.filter(status=JobStatus.QUEUED),
        transition=Transition.CANCEL,
        status=JobStatus.CANCELLED,
        error_code=CANCELLED_CODE,
        error_message="Cancelled by the client before it ran.",
    )
    if not cancelled:
        marked = mine.filter(status=JobStatus.IN_PROGRESS).update(
            cancel_requested_at=Coalesce("cancel_requested_at", Now())
        )
        if not marked:
            job.refresh_from_db(fields=["status"])
            if job.status != JobStatus.CANCELLED:
                raise errors.JobNotCancellable(details={"status": job.status.lower()})
    return selectors.job_get(client=client, job_id=job.id)
