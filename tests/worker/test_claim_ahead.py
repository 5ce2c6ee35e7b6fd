"""Preprocessing of batch N+1 overlaps inference of batch N (claim-ahead), and a batch claimed ahead
that the worker will not run goes back to the queue untouched."""

from __future__ import annotations

import threading
import time

import pytest

from backend.jobs.models import Job, JobStatus
from tests.factories import png_bytes, post_image


class Recorder:
    """Wraps the runtime: when each preprocessing starts (and in which thread), when each inference runs."""

    def __init__(self, runtime, infer_seconds: float = 0.05):
        self._preprocess, self._predict = runtime.preprocess, runtime.predict  # before they are wrapped
        self.infer_seconds = infer_seconds
        self.preprocess_calls: list[tuple[float, str]] = []
        self.predict_windows: list[tuple[float, float, int]] = []
        self.lock = threading.Lock()
        self.on_predict = None

    def preprocess(self, data: bytes):
        with self.lock:
            self.preprocess_calls.append((time.monotonic(), threading.current_thread().name))
        return self._preprocess(data)

    def predict(self, batch):
        start = time.monotonic()
        out = self._predict(batch)
        time.sleep(self.infer_seconds)  # a slower model: room for the pool to work beside it
        self.predict_windows.append((start, time.monotonic(), len(batch)))
        if self.on_predict:
            self.on_predict()
        return out


@pytest.fixture
def recorded(model_worker, monkeypatch):
    rec = Recorder(model_worker.runtime)
    monkeypatch.setattr(model_worker.runtime, "preprocess", rec.preprocess)
    monkeypatch.setattr(model_worker.runtime, "predict", rec.predict)
    return rec


@pytest.mark.django_db
def test_next_batch_is_preprocessed_while_the_model_runs(api, model_worker, recorded, settings):
    settings.BATCH_MAX_SIZE, settings.BATCH_MAX_WAIT_MS, settings.PREPROCESS_WORKERS = 2, 0, 1
    ids = [post_image(api, png_bytes(seed=i)).json()["id"] for i in range(6)]

    assert model_worker.drain() == 6
    assert [n for _, _, n in recorded.predict_windows] == [2, 2, 2]
    assert {t for _, t in recorded.preprocess_calls} == {"cxrq-preprocess_0"}  # in the pool
    starts = sorted(s for s, _ in recorded.preprocess_calls)
    for k, (_, end, _) in enumerate(recorded.predict_windows[:-1]):
        # the first image of batch k+1 started preprocessing before batch k's inference ended
        assert starts[2 * (k + 1)] < end
    assert set(Job.objects.filter(id__in=ids).values_list("status", flat=True)) == {JobStatus.SUCCEEDED}


@pytest.mark.django_db
def test_without_preprocessing_workers_everything_runs_in_turn(api, model_worker, recorded, settings):
    settings.BATCH_MAX_SIZE, settings.BATCH_MAX_WAIT_MS, settings.PREPROCESS_WORKERS = 2, 0, 0
    for i in range(4):
        post_image(api, png_bytes(seed=100 + i))

    assert model_worker.drain() == 4
    starts = sorted(s for s, _ in recorded.preprocess_calls)
    first_end = recorded.predict_windows[0][1]
    assert starts[2] > first_end  # batch 2 waited for batch 1
    assert {t for _, t in recorded.preprocess_calls} == {threading.current_thread().name}


@pytest.mark.django_db
def test_a_batch_claimed_ahead_is_given_back_when_the_worker_stops(api, model_worker, recorded, settings):
    settings.BATCH_MAX_SIZE, settings.BATCH_MAX_WAIT_MS, settings.PREPROCESS_WORKERS = 2, 0, 1
    ids = [post_image(api, png_bytes(seed=200 + i)).json()["id"] for i in range(4)]
    recorded.on_predict = model_worker.stopping.set  # stop during the first forward pass

    assert model_worker.drain() == 2
    jobs = {j.id: j for j in Job.objects.filter(id__in=ids)}
    statuses = sorted(j.status for j in jobs.values())
    assert statuses == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    for job in jobs.values():
        if job.status == JobStatus.QUEUED:
            assert job.attempts == 0 and job.claim_token is None  # the attempt is undone
    assert model_worker.loop._ahead is None
