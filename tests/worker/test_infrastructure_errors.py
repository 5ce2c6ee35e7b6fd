"""Errors of the infrastructure (SQLite's "database is locked", a connection dropped, the broker
unreachable) are not the job's fault: the worker retries the write in place, and a batch they still
interrupt goes back with its attempt undone. They never count toward MAX_ATTEMPTS, and no job's
client ever reads an exception's class or text: a sentence and a stable code."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.utils import timezone

from backend.jobs.errors import JOB_ERROR_MESSAGES
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import claims
from tests.factories import png_bytes, post_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def fast_retries(monkeypatch, settings):
    from worker import batch_loop

    monkeypatch.setattr(batch_loop, "INFRASTRUCTURE_RETRY_SECONDS", 0.5)
    monkeypatch.setattr(batch_loop.time, "sleep", lambda s: None)  # the backoff, not the behaviour
    settings.BATCH_MAX_WAIT_MS, settings.MAX_ATTEMPTS = 0, 2


def _failing(real, times: int, error: Exception):
    """`real`, failing the first `times` calls with `error`."""
    calls = {"n": 0}

    def call(**kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return real(**kwargs)

    return call


def test_a_locked_database_while_storing_is_retried_in_place(api, worker, fast_retries, monkeypatch):
    job_id = post_image(api, png_bytes(seed=1)).json()["id"]
    locked = OperationalError("database is locked")
    monkeypatch.setattr(claims, "job_store_results", _failing(claims.job_store_results, 2, locked))

    assert worker.drain() == 1
    job = Job.objects.get(id=job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1 and job.error_code == ""


def test_an_infrastructure_error_that_lasts_spends_no_attempt(api, worker, fast_retries, monkeypatch):
    """Locked for longer than the retries, again and again: the batch is released each time with
    its attempt undone, never failed, however many times it happens."""
    job_id = post_image(api, png_bytes(seed=2)).json()["id"]
    real_store = claims.job_store_results

    def locked(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(claims, "job_store_results", locked)
    for _ in range(4):  # twice MAX_ATTEMPTS
        worker.drain()
        job = Job.objects.get(id=job_id)
        assert job.status == JobStatus.QUEUED and job.attempts == 0, (job.status, job.attempts)
        Job.objects.filter(id=job_id).update(available_at=timezone.now())  # past the release delay

    monkeypatch.setattr(claims, "job_store_results", real_store)
    worker.drain()
    job = Job.objects.get(id=job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1


def test_a_claim_on_a_locked_database_leaves_the_jobs_queued(api, worker, fast_retries, monkeypatch):
    job_id = post_image(api, png_bytes(seed=3)).json()["id"]

    def locked(**kwargs):
        raise OperationalError("database is locked")

    worker.start()
    monkeypatch.setattr(claims, "job_claim_batch", locked)
    assert worker.drain() == 0  # no task error: the sweeper wakes a worker again
    job = Job.objects.get(id=job_id)
    assert job.status == JobStatus.QUEUED and job.attempts == 0


def test_a_job_that_fails_shows_its_client_a_sentence_and_a_code(api, worker, fast_retries, monkeypatch):
    """A bug (not the infrastructure) fails the job after MAX_ATTEMPTS: the client reads the code
    and a sentence; the exception's class and text are only in the log."""
    job_id = post_image(api, png_bytes(seed=4)).json()["id"]

    def bug(**kwargs):
        raise RuntimeError("secret detail /var/lib/cxrq/media/x.png")

    monkeypatch.setattr(claims, "job_store_results", bug)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            worker.drain()
        Job.objects.filter(id=job_id).update(available_at=timezone.now())  # past the backoff

    body = api.get(f"/api/v1/jobs/{job_id}").json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "worker_error"
    assert body["error"]["message"] == JOB_ERROR_MESSAGES["worker_error"]
    stored = Job.objects.get(id=job_id).error_message
    assert "RuntimeError" not in stored and "secret" not in stored


def test_a_row_written_with_exception_text_is_shown_as_a_sentence(api, worker, fast_retries):
    """Jobs failed before the sentences existed carry "gave up after 3 attempts: OperationalError:
    database is locked": the API shows the code's sentence instead."""
    job_id = post_image(api, png_bytes(seed=5)).json()["id"]
    Job.objects.filter(id=job_id).update(
        status=JobStatus.FAILED,
        error_code="worker_error",
        error_message="gave up after 3 attempts: OperationalError: database is locked",
        finished_at=timezone.now(),
    )
    body = api.get(f"/api/v1/jobs/{job_id}").json()
    assert body["error"] == {"code": "worker_error", "message": JOB_ERROR_MESSAGES["worker_error"]}
