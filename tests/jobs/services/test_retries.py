"""Retries: a job attempted before is claimed alone; transient errors back off, then fail."""

from __future__ import annotations

import pytest
from django.utils import timezone

from backend.jobs.models import Job, JobStatus
from backend.jobs.services import claims, leases
from tests.factories import claim, expire, make_jobs

pytestmark = pytest.mark.django_db


def test_retried_jobs_are_claimed_alone():
    jobs = make_jobs(4)
    batch = claim(4)
    expire(batch)
    leases.job_reap_expired()
    first = claim(4)
    assert len(first.jobs) == 1 and first.jobs[0].attempts == 2  # a suspect runs alone
    assert len(claim(4).jobs) == 1
    assert {j.id for j in jobs} >= set(first.job_ids)


def _retry_later(batch) -> dict:
    return claims.job_retry_later(
        job_ids=batch.job_ids, claim_token=batch.claim_token, code="db", message="x"
    )


def test_transient_errors_back_off_then_fail(settings):
    settings.MAX_ATTEMPTS = 2
    settings.RETRY_BACKOFF_SECONDS = 60
    job = make_jobs(1)[0]
    assert _retry_later(claim(1)) == {"requeued": 1, "failed": 0}
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.available_at > timezone.now()
    assert claim(1).jobs == []  # not before its backoff
    Job.objects.filter(id=job.id).update(available_at=timezone.now())
    assert _retry_later(claim(1)) == {"requeued": 0, "failed": 1}
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "It was tried 2 times." in job.error_message
