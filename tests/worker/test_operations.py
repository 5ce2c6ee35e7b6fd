"""Leases, reaper, sweeper, retries and the operator commands, on the database alone."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from backend.jobs import services
from backend.jobs.invariants import check_invariants
from backend.jobs.models import Job, JobResult, JobStatus
from tests.conftest import png_bytes
from tests.worker.test_claim import claim, make_jobs

pytestmark = pytest.mark.django_db


def expire(batch) -> None:
    Job.objects.filter(claim_token=batch.claim_token).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def test_expired_leases_are_requeued_then_failed_after_max_attempts(settings):
    settings.MAX_ATTEMPTS = 3
    job = make_jobs(1)[0]
    for attempt in (1, 2):
        batch = claim(8)
        assert batch.job_ids == [job.id]
        expire(batch)
        assert services.job_reap_expired() == {"requeued": [job.id], "failed": []}
        job.refresh_from_db()
        assert (job.status, job.attempts, job.error_code) == (JobStatus.QUEUED, attempt, "lease_expired")
        assert job.claim_token is None
    batch = claim(8)
    expire(batch)
    assert services.job_reap_expired() == {"requeued": [], "failed": [job.id]}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error_code) == (JobStatus.FAILED, 3, "max_attempts_exceeded")
    assert check_invariants().ok


def test_live_leases_are_left_alone_and_renewed():
    make_jobs(2)
    batch = claim(2)
    before = list(Job.objects.values_list("lease_expires_at", flat=True))
    assert services.job_reap_expired() == {"requeued": [], "failed": []}
    assert services.job_renew_leases(claim_token=batch.claim_token) == 2
    assert services.job_renew_leases(claim_token=uuid.uuid4()) == 0
    after = list(Job.objects.values_list("lease_expires_at", flat=True))
    assert all(a >= b for a, b in zip(after, before, strict=True))


def test_retried_jobs_are_claimed_alone():
    jobs = make_jobs(4)
    batch = claim(4)
    expire(batch)
    services.job_reap_expired()
    first = claim(4)
    assert len(first.jobs) == 1 and first.jobs[0].attempts == 2  # a suspect runs alone
    assert len(claim(4).jobs) == 1
    assert {j.id for j in jobs} >= set(first.job_ids)


def test_transient_errors_back_off_then_fail(settings):
    settings.MAX_ATTEMPTS = 2
    settings.RETRY_BACKOFF_SECONDS = 60
    job = make_jobs(1)[0]
    batch = claim(1)
    assert services.job_retry_later(
        job_ids=batch.job_ids, claim_token=batch.claim_token, code="db", message="x"
    ) == {
        "requeued": 1,
        "failed": 0,
    }
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.available_at > timezone.now()
    assert claim(1).jobs == []  # not before its backoff
    Job.objects.filter(id=job.id).update(available_at=timezone.now())
    batch = claim(1)
    assert services.job_retry_later(
        job_ids=batch.job_ids, claim_token=batch.claim_token, code="db", message="x"
    ) == {
        "requeued": 0,
        "failed": 1,
    }
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "gave up after 2 attempts" in job.error_message


def test_sweeper_rewakes_old_queued_jobs(monkeypatch, django_capture_on_commit_callbacks):
    sent: list[list[str]] = []
    monkeypatch.setattr("backend.jobs.dispatch._send", lambda ids: sent.append(ids) or True)
    jobs = make_jobs(2)
    Job.objects.filter(id=jobs[0].id).update(created_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        swept = services.job_sweep_queued(older_than_seconds=60)
    assert swept == [jobs[0].id]
    assert sent == [[str(jobs[0].id)]]


def test_jobs_check_command_reports_violations():
    out = StringIO()
    make_jobs(1)
    call_command("jobs_check", stdout=out)
    assert json.loads(out.getvalue())["ok"] is True

    batch = claim(1)
    Job.objects.filter(id=batch.job_ids[0]).update(status=JobStatus.SUCCEEDED)  # a success with no result
    with pytest.raises(CommandError):
        call_command("jobs_check", stdout=(out := StringIO()))
    report = json.loads(out.getvalue())
    assert report["violations"]["succeeded_without_result"] == [str(batch.job_ids[0])]


def test_jobs_requeue_command(settings):
    jobs = make_jobs(3)
    batch = claim(3)
    expire(batch)
    Job.objects.filter(id=jobs[0].id).update(lease_expires_at=timezone.now() - timedelta(minutes=10))
    out = StringIO()
    call_command("jobs_requeue", "--stuck-minutes", "5", stdout=out)
    assert "requeued 1 of 1" in out.getvalue()
    assert Job.objects.get(id=jobs[0].id).status == JobStatus.QUEUED

    call_command("jobs_requeue", "--ids", str(jobs[1].id), "--fail", "bad scan", stdout=out)
    failed = Job.objects.get(id=jobs[1].id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        JobStatus.FAILED,
        "failed_by_operator",
        "bad scan",
    )

    # A failed job comes back only when asked, and not over a newer live job for the same bytes.
    call_command("jobs_requeue", "--ids", str(jobs[1].id), "--include-failed", stdout=(out := StringIO()))
    assert "requeued 1 of 1" in out.getvalue()
    assert Job.objects.get(id=jobs[1].id).attempts == 0
    with pytest.raises(CommandError):
        call_command("jobs_requeue")


def test_requeue_skips_a_failed_job_that_has_a_newer_live_twin():
    data = png_bytes(seed=77)
    old = services.job_create(upload=SimpleUploadedFile("a.png", data)).job
    batch = claim(1)
    services.job_fail(job_id=old.id, claim_token=batch.claim_token, code="x", message="y")
    new = services.job_create(upload=SimpleUploadedFile("a.png", data)).job
    assert new.id != old.id
    assert services.job_requeue(job_ids=[old.id], statuses=(JobStatus.FAILED,)) == []
    assert Job.objects.get(id=old.id).status == JobStatus.FAILED
    assert not JobResult.objects.exists()
