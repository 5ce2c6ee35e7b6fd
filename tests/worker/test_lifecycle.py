"""The worker process's lifecycle in process: SIGTERM at each point of a drain, and its loops."""

from __future__ import annotations

import signal
import threading

import pytest
from django.db import OperationalError

from backend.jobs.models import Job, JobStatus, WorkerHeartbeat
from backend.jobs.services import claims
from tests.factories import png_bytes, post_image
from worker import lifecycle
from worker.batch_loop import BatchLoop

pytestmark = pytest.mark.django_db(transaction=True)


def test_sigterm_between_the_claim_and_processing_releases_the_batch(api, worker, settings, monkeypatch):
    """The claim has committed, nothing has run: the batch goes back with its attempt undone,
    instead of waiting out its lease (and costing each job an attempt)."""
    settings.BATCH_MAX_SIZE, settings.BATCH_MAX_WAIT_MS = 4, 0
    ids = [post_image(api, png_bytes(seed=i)).json()["id"] for i in range(3)]
    real_claim = BatchLoop._claim

    def claim_then_sigterm(loop):
        batch = real_claim(loop)
        worker.on_sigterm(signal.SIGTERM, None)  # arrives right after the claim's commit
        return batch

    monkeypatch.setattr(BatchLoop, "_claim", claim_then_sigterm)
    assert worker.drain() == 0
    for job in Job.objects.filter(id__in=ids):
        assert (job.status, job.attempts, job.claim_token) == (JobStatus.QUEUED, 0, None)
    assert worker.loop.held_claims() == []


def test_sigterm_during_inference_finishes_the_batch_and_releases_the_one_claimed_ahead(
    api, worker, settings, monkeypatch
):
    settings.BATCH_MAX_SIZE, settings.BATCH_MAX_WAIT_MS, settings.PREPROCESS_WORKERS = 2, 0, 1
    ids = [post_image(api, png_bytes(seed=10 + i)).json()["id"] for i in range(4)]
    worker.start()
    real_predict = worker.runtime.predict

    def predict_then_sigterm(batch):
        worker.on_sigterm(signal.SIGTERM, None)
        return real_predict(batch)

    monkeypatch.setattr(worker.runtime, "predict", predict_then_sigterm)
    assert worker.drain() == 2
    jobs = list(Job.objects.filter(id__in=ids))
    assert sorted(j.status for j in jobs) == [JobStatus.QUEUED] * 2 + [JobStatus.SUCCEEDED] * 2
    assert all(j.attempts == 0 for j in jobs if j.status == JobStatus.QUEUED)
    assert worker.drain() == 0  # a wake-up after SIGTERM runs nothing


def test_background_loops_run_by_name_and_stop(worker, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 0.05
    worker.start()
    names = {t.name for t in threading.enumerate()}
    assert {"cxrq-heartbeat", "cxrq-lease-reaper", "cxrq-queue-sweeper"} <= names
    assert WorkerHeartbeat.objects.filter(worker_id=worker.worker_id).exists()
    worker.stop()
    names = {t.name for t in threading.enumerate()}
    assert not names & {"cxrq-heartbeat", "cxrq-lease-reaper", "cxrq-queue-sweeper"}
    assert not WorkerHeartbeat.objects.filter(worker_id=worker.worker_id).exists()  # signed off


def test_a_child_signalled_alone_leaves_once_idle(worker, monkeypatch):
    """Nobody closes the pool (only this child got SIGTERM): after the grace it signs off and
    exits by itself, and the pool starts a fresh child."""
    exits: list[int] = []
    monkeypatch.setattr(lifecycle, "ORPHAN_STOP_SECONDS", 0.05)
    monkeypatch.setattr(lifecycle.os, "_exit", exits.append)
    worker.start()
    worker.on_sigterm(signal.SIGTERM, None)
    worker._orphan_timer.join(5)
    assert exits == [0]
    assert not WorkerHeartbeat.objects.filter(worker_id=worker.worker_id).exists()


def test_when_the_database_goes_mid_batch_nothing_stays_held(api, worker, settings, monkeypatch):
    """The store fails and so does every give-back (the database is gone), after the retries in
    place: the worker keeps no claim, so its heartbeat renews nothing and the leases lapse to the
    reaper. An infrastructure error ends the drain quietly (no task error): the jobs are not the
    cause."""
    from worker import batch_loop

    monkeypatch.setattr(batch_loop, "INFRASTRUCTURE_RETRY_SECONDS", 0.3)
    settings.BATCH_MAX_SIZE, settings.BATCH_MAX_WAIT_MS, settings.PREPROCESS_WORKERS = 2, 0, 1
    for i in range(4):
        post_image(api, png_bytes(seed=40 + i))
    worker.start()

    def database_gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    for name in ("job_store_results", "job_retry_later", "job_release"):
        monkeypatch.setattr(claims, name, database_gone)
    worker.drain()
    assert worker.loop.held_claims() == []
    assert Job.objects.filter(status=JobStatus.IN_PROGRESS).count() == 4  # for the reaper, once lapsed
