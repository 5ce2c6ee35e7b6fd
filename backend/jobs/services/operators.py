"""What an operator does to jobs by hand (admin actions, `manage.py jobs_requeue`)."""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction

from backend.jobs.dispatch import wake_workers
from backend.jobs.models import Job, JobStatus, Transition
from backend.jobs.services.transitions import CANCELLED_CODE, to_queue, to_terminal


def job_requeue(*, job_ids: list[uuid.UUID], statuses: tuple[str, ...]) -> list[uuid.UUID]:
    """Put jobs back in the queue with a fresh attempt budget.

    A FAILED job whose bytes already have a newer live job is skipped (the
    dedup constraint would refuse it, and the newer job is the one to follow).
    """
    requeued = []
    for job_id in job_ids:
        try:
            with transaction.atomic():
                updated = to_queue(
                    # A job whose image has been purged (retention) has nothing left to analyse.
                    Job.objects.filter(id=job_id, status__in=statuses, image_deleted_at__isnull=True),
                    transition=Transition.OPERATOR_REQUEUE,
                    attempts=0,
                    error_code="",
                    error_message="",
                    available_at=None,
                    started_at=None,
                    finished_at=None,
                )
        except IntegrityError:
            continue
        if updated:
            requeued.append(job_id)
    if requeued:
        wake_workers(requeued)
    return requeued


def job_fail_by_operator(*, job_ids: list[uuid.UUID], reason: str) -> int:
    """Fail queued or stuck jobs for good."""
    return to_terminal(
        Job.objects.filter(id__in=job_ids, status__in=[JobStatus.QUEUED, JobStatus.IN_PROGRESS]),
        transition=Transition.OPERATOR_FAIL,
        status=JobStatus.FAILED,
        error_code="failed_by_operator",
        error_message=reason,
    )


def job_cancel_queued(*, job_ids: list[uuid.UUID], reason: str) -> list[uuid.UUID]:
    """QUEUED -> CANCELLED for any client's jobs, by an operator (cancellation.job_cancel is a
    client's own, one job at a time). Jobs in any other status are left as they are: a running
    batch is not interrupted here. The ids of the jobs cancelled."""
    ids = list(Job.objects.filter(id__in=job_ids, status=JobStatus.QUEUED).values_list("id", flat=True))
    if not ids:
        return []
    to_terminal(
        Job.objects.filter(id__in=ids, status=JobStatus.QUEUED),
        transition=Transition.CANCEL,
        status=JobStatus.CANCELLED,
        error_code=CANCELLED_CODE,
        error_message=reason,
    )
    # Only those this move ended (a worker may have claimed one in between).
    ended = Job.objects.filter(id__in=ids, status=JobStatus.CANCELLED, error_message=reason)
    return list(ended.values_list("id", flat=True))
