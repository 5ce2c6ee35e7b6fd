"""Every move to an end sets the same fields: a success carries no error, whatever came before."""

from __future__ import annotations

import pytest

from backend.jobs.models import Job, JobStatus
from backend.jobs.services import claims, leases, operators
from backend.jobs.services.claims import InferenceOutcome
from tests.factories import claim, expire, make_jobs

pytestmark = pytest.mark.django_db


def _store(batch) -> list:
    outcomes = [
        InferenceOutcome(job_id=j.id, probabilities={"x": 0.5}, provenance={}, timings={}) for j in batch.jobs
    ]
    return claims.job_store_results(batch=batch, outcomes=outcomes)


def test_a_job_that_succeeds_after_a_lease_expiry_carries_no_error(api):
    (job,) = make_jobs(1)
    first = claim(1)
    expire(first)
    assert leases.job_reap_expired()["requeued"] == [job.id]
    assert Job.objects.get(id=job.id).error_code == "lease_expired"  # while queued, it says why

    second = claim(1)
    assert _store(second) == [job.id]
    done = Job.objects.get(id=job.id)
    assert (done.status, done.error_code, done.error_message) == (JobStatus.SUCCEEDED, "", "")
    assert (done.claim_token, done.lease_expires_at) == (None, None)
    assert done.finished_at is not None and done.attempts == 2
    body = api.get(f"/api/v1/jobs/{job.id}").json()
    assert body["status"] == "succeeded" and body["error"] is None


def test_a_job_that_succeeds_after_a_retry_carries_no_error(settings):
    settings.RETRY_BACKOFF_SECONDS = 0
    (job,) = make_jobs(1)
    batch = claim(1)
    claims.job_retry_later(
        job_ids=batch.job_ids, claim_token=batch.claim_token, code="worker_error", message="x"
    )
    assert _store(claim(1)) == [job.id]
    done = Job.objects.get(id=job.id)
    assert (done.status, done.error_code, done.error_message) == (JobStatus.SUCCEEDED, "", "")


def test_every_failure_clears_the_claim_and_says_why(settings):
    settings.MAX_ATTEMPTS = 1
    jobs = make_jobs(4)
    failed_by_worker = claim(1)
    claims.job_fail(
        job_id=failed_by_worker.job_ids[0], claim_token=failed_by_worker.claim_token, code="bad", message="m"
    )
    gave_up = claim(1)
    claims.job_retry_later(
        job_ids=gave_up.job_ids, claim_token=gave_up.claim_token, code="worker_error", message="m"
    )
    reaped = claim(1)
    expire(reaped)
    leases.job_reap_expired()
    operators.job_fail_by_operator(job_ids=[jobs[3].id], reason="duplicate study")

    for job in Job.objects.all():
        assert job.status == JobStatus.FAILED
        assert job.error_code and job.error_message
        assert job.finished_at is not None
        assert (job.claim_token, job.lease_expires_at) == (None, None)


def test_a_move_whose_guard_matches_nothing_is_logged(caplog):
    make_jobs(1)
    batch = claim(1)
    expire(batch)
    leases.job_reap_expired()  # someone else moved it first
    assert not claims.job_fail(job_id=batch.job_ids[0], claim_token=batch.claim_token, code="x", message="y")
    assert "event=transition_guard_missed transition=fail expected=1 updated=0" in caplog.text
