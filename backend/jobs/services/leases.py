"""Leases: a worker renews the leases of what it holds; the reaper requeues (or, after
MAX_ATTEMPTS, fails) jobs whose holder was lost; the sweeper re-sends lost wake-ups.

Each runs from every worker as its own background loop (worker/lifecycle.py) and
is safe to run from all of them at once.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backend.jobs import selectors
from backend.jobs.dispatch import wake_workers
from backend.jobs.models import Job, JobStatus, Transition
from backend.jobs.services.transitions import to_queue, to_terminal

logger = logging.getLogger(__name__)


def job_renew_leases(*, claim_token: uuid.UUID) -> int:
    """Extend the leases of one batch a worker holds (called from its heartbeat).

    Only batches in hand: jobs a worker claimed and then lost track of (an
    error escaped the batch) must lapse, so the reaper gives them to someone.
    """
    return Job.objects.filter(status=JobStatus.IN_PROGRESS, claim_token=claim_token).update(
        lease_expires_at=timezone.now() + timedelta(seconds=settings.LEASE_SECONDS)
    )


def job_reap_expired() -> dict[str, list[uuid.UUID]]:
    """Return jobs whose lease expired to the queue, or fail them after MAX_ATTEMPTS.

    The holder died, froze or was killed for running too long. The claim token
    is cleared, so if it comes back its results are refused. Rows are locked
    with SKIP LOCKED and each UPDATE is guarded by status and lease.
    """
    now = timezone.now()
    with transaction.atomic():
        expired = list(
            selectors.expired_leases(now=now)
            .select_for_update(skip_locked=True)
            .values_list("id", "attempts")
        )
        to_fail = [i for i, a in expired if a >= settings.MAX_ATTEMPTS]
        requeue = [i for i, a in expired if a < settings.MAX_ATTEMPTS]
        if to_fail:
            to_terminal(
                selectors.expired_leases(now=now).filter(id__in=to_fail),
                transition=Transition.REAP,
                status=JobStatus.FAILED,
                error_code="max_attempts_exceeded",
                error_message=(
                    f"the worker running this image was lost {settings.MAX_ATTEMPTS} times "
                    "(crashed, hung or was killed); it is not retried again"
                ),
                expected=len(to_fail),
                now=now,
            )
        if requeue:
            to_queue(
                selectors.expired_leases(now=now).filter(id__in=requeue),
                transition=Transition.REAP,
                expected=len(requeue),
                error_code="lease_expired",
                error_message="the worker running this job was lost; requeued",
            )
            wake_workers(requeue)
    if expired:
        logger.warning(
            "event=leases_expired requeued=%s failed=%s",
            ",".join(map(str, requeue)) or "-",
            ",".join(map(str, to_fail)) or "-",
        )
    return {"requeued": requeue, "failed": to_fail}


def job_sweep_queued(*, older_than_seconds: float, limit: int = 100) -> list[uuid.UUID]:
    """Wake workers for queued jobs that have waited too long (their wake-up was lost:
    broker restarted or flushed, or down when the job was created). Extra wake-ups are harmless."""
    ids = list(
        selectors.queued_jobs(waiting_seconds=older_than_seconds, claimable_only=True).values_list(
            "id", flat=True
        )[:limit]
    )
    if ids:
        wake_workers(ids)
    return ids
