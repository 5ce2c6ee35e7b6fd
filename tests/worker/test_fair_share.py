"""Claim order through a real worker process: one client's backlog does not hold up another's
job, and a STAT job goes before routine ones."""

from __future__ import annotations

import time

import pytest

from backend.jobs.models import Job, JobStatus
from tests.factories import client_and_key, make_jobs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BATCH = 8


def test_a_job_sent_after_another_clients_backlog_finishes_within_a_few_batches(settings, start_worker):
    settings.CLIENT_MAX_QUEUED_JOBS = 0  # A may queue its whole backlog
    hospital_a, _ = client_and_key(name="hospital-a")
    hospital_b, _ = client_and_key(name="hospital-b")
    backlog = make_jobs(1000, client=hospital_a)
    (late,) = make_jobs(1, start=5000, client=hospital_b)
    assert late.created_at > max(j.created_at for j in backlog)

    _run_until_succeeded(start_worker, late)
    a_done = Job.objects.filter(client=hospital_a, status=JobStatus.SUCCEEDED).count()
    # FIFO would have run all 1,000 of A's first. Fair share: B's job is in the first batch,
    # or the one claimed ahead of it while the first ran.
    assert a_done <= 2 * BATCH, a_done
    assert Job.objects.filter(client=hospital_a, status=JobStatus.QUEUED).count() >= 1000 - 3 * BATCH


def test_a_stat_job_sent_last_finishes_first_with_a_real_worker(settings, start_worker):
    """200 routine jobs of one client queued, then one STAT job of the same client."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from backend.jobs.services import intake
    from tests.factories import png_bytes

    settings.CLIENT_MAX_QUEUED_JOBS = 0
    hospital, _ = client_and_key(name="hospital-a")
    make_jobs(200, client=hospital)
    urgent = intake.job_create(
        client=hospital, upload=SimpleUploadedFile("stat.png", png_bytes(seed=9000)), priority="stat"
    ).job
    _run_until_succeeded(start_worker, urgent)
    routine_done = Job.objects.filter(status=JobStatus.SUCCEEDED).exclude(pk=urgent.pk).count()
    assert routine_done <= BATCH, routine_done  # in the first batch (the rest of it was routine)


def _run_until_succeeded(start_worker, job: Job) -> None:
    """Start a fake-model worker (batches of BATCH, 300 ms each) and wait for `job` to succeed."""
    worker = start_worker(
        {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "300", "CXRQ_BATCH_MAX_SIZE": str(BATCH)}
    )
    deadline = time.monotonic() + 120
    while Job.objects.get(pk=job.pk).status != JobStatus.SUCCEEDED:
        assert time.monotonic() < deadline, worker.log[-3000:]
        time.sleep(0.05)
