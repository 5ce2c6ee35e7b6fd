"""Running batches: one forward pass per batch, a bad image fails alone, dedup under concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection
from django.test import Client

from backend.jobs.models import Job, JobResult, JobStatus
from tests.factories import PNG_JPEG_SAMPLES, png_bytes, post_image, sample_bytes


@pytest.mark.django_db
def test_batch_runs_one_forward_pass_and_stores_every_result(api, model_worker, settings, monkeypatch):
    settings.BATCH_MAX_SIZE = 8
    settings.BATCH_MAX_WAIT_MS = 0
    ids = [post_image(api, sample_bytes(n), n).json()["id"] for n in PNG_JPEG_SAMPLES]
    calls: list[int] = []
    real_predict = model_worker.runtime.predict
    monkeypatch.setattr(model_worker.runtime, "predict", lambda b: calls.append(len(b)) or real_predict(b))

    assert model_worker.drain() == len(ids)
    assert calls == [len(ids)]  # 7 samples, batch size 8: one forward pass
    results = JobResult.objects.filter(job_id__in=ids)
    assert results.count() == len(ids)
    batch_ids = {r.timings["batch_id"] for r in results}
    assert len(batch_ids) == 1
    assert {r.timings["batch_size"] for r in results} == {len(ids)}
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}


@pytest.mark.django_db
def test_batches_are_capped_at_batch_max_size(api, model_worker, settings, monkeypatch):
    settings.BATCH_MAX_SIZE = 3
    settings.BATCH_MAX_WAIT_MS = 0
    for i in range(7):
        post_image(api, png_bytes(seed=i))
    calls: list[int] = []
    real_predict = model_worker.runtime.predict
    monkeypatch.setattr(model_worker.runtime, "predict", lambda b: calls.append(len(b)) or real_predict(b))
    assert model_worker.drain() == 7
    assert calls == [3, 3, 1]


@pytest.mark.django_db
def test_an_image_that_fails_in_the_worker_fails_alone(api, model_worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    good = [post_image(api, png_bytes(seed=i)).json()["id"] for i in range(3)]
    bad = post_image(api, png_bytes(seed=50)).json()["id"]
    job = Job.objects.get(id=bad)
    with job.upload.storage.open(job.upload.name, "wb") as fh:  # damaged after it was accepted
        fh.write(b"\x89PNG\r\n\x1a\n broken")

    model_worker.drain()
    failed = Job.objects.get(id=bad)
    assert failed.status == JobStatus.FAILED
    assert failed.error_code == "decode_failed"
    assert failed.finished_at is not None
    assert not JobResult.objects.filter(job_id=bad).exists()
    assert set(Job.objects.filter(id__in=good).values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
    assert JobResult.objects.filter(job_id__in=good).count() == 3


@pytest.mark.django_db
def test_results_match_running_the_model_directly(api, model_worker, runtime, settings):
    """What the API returns is the model's output for that image, per job (no mix-up in a batch)."""
    from worker.runtime.preprocess import preprocess

    settings.BATCH_MAX_WAIT_MS = 0
    names = PNG_JPEG_SAMPLES[:4]
    ids = [post_image(api, sample_bytes(n), n).json()["id"] for n in names]
    model_worker.drain()
    for name, job_id in zip(names, ids, strict=True):
        probs = JobResult.objects.get(job_id=job_id).probabilities
        got = np.array([probs[label] for label in runtime.labels])
        want = runtime.predict(preprocess(sample_bytes(name))[None])[0]
        assert np.abs(got - want).max() < 1e-5
    a, b = (JobResult.objects.get(job_id=i).probabilities for i in ids[:2])
    a, b = np.array([a[k] for k in runtime.labels]), np.array([b[k] for k in runtime.labels])
    assert np.abs(a - b).max() > 0.05  # the bound above means something


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_identical_uploads_make_one_job_and_one_inference(model_worker, settings, api_key):
    settings.BATCH_MAX_WAIT_MS = 0
    data = sample_bytes("00027426_000.png")
    barrier = threading.Barrier(20)
    responses = []

    def upload() -> None:
        try:
            client = Client()
            barrier.wait()
            from django.core.files.uploadedfile import SimpleUploadedFile

            responses.append(
                client.post(
                    "/api/v1/jobs",
                    {"image": SimpleUploadedFile("x.png", data)},
                    HTTP_AUTHORIZATION=f"Api-Key {api_key}",
                )
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=upload) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(responses) == 20
    assert {r.status_code for r in responses} <= {200, 202}
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(not r.json()["deduplicated"] for r in responses) == 1
    assert Job.objects.count() == 1

    assert model_worker.drain() == 1
    assert JobResult.objects.count() == 1
    files = [p for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()]
    assert len(files) == 1  # the losers of the race left no file behind
