"""Leases: renewal, the reaper of lost workers' jobs, the sweeper of lost wake-ups."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from backend.jobs.invariants import check_invariants
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import leases
from tests.factories import claim, expire, make_jobs

pytestmark = pytest.mark.django_db


def test_expired_leases_are_requeued_then_failed_after_max_attempts(settings):
    settings.MAX_ATTEMPTS = 3
    job = make_jobs(1)[0]
    for attempt in (1, 2):
        batch = claim(8)
        assert batch.job_ids == [job.id]
        expire(batch)
        assert leases.job_reap_expired() == {"requeued": [job.id], "failed": []}
        job.refresh_from_db()
        assert (job.status, job.attempts, job.error_code) == (JobStatus.QUEUED, attempt, "lease_expired")
        assert job.claim_token is None
    batch = claim(8)
    expire(batch)
    assert leases.job_reap_expired() == {"requeued": [], "failed": [job.id]}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == (JobStatus.FAILED, 3, "max_attempts_exceeded")
    assert check_invariants().ok


def test_live_leases_are_left_alone_and_renewed():
    make_jobs(2)
    batch = claim(2)
    before = list(Job.objects.values_list("lease_expires_at", flat=True))
    assert leases.job_reap_expired() == {"requeued": [], "failed": []}
    assert leases.job_renew_leases(claim_token=batch.claim_token) == 2
    assert leases.job_renew_leases(claim_token=uuid.uuid4()) == 0
    after = list(Job.objects.values_list("lease_expires_at", flat=True))
    assert all(a >= b for a, b in zip(after, before, strict=True))


def test_sweeper_rewakes_old_queued_jobs(monkeypatch, django_capture_on_commit_callbacks):
    sent: list[list[str]] = []
    monkeypatch.setattr("backend.jobs.dispatch._send", lambda ids: sent.append(ids) or True)
    jobs = make_jobs(2)
    Job.objects.filter(id=jobs[0].id).update(created_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        swept = leases.job_sweep_queued(older_than_seconds=60)
    assert swept == [jobs[0].id]
    assert sent == [[str(jobs[0].id)]]
