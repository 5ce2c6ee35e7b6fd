"""Backpressure (503), rate limits (429), Idempotency-Key and degraded health, through the API."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from backend.jobs.models import IdempotencyKey, Job
from tests.api.test_jobs_api import assert_error
from tests.conftest import png_bytes, post_image

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_throttle_cache():
    cache.clear()
    yield
    cache.clear()


def test_queue_over_depth_refuses_new_work_but_serves_cache_hits(api, settings, processor, media_files):
    settings.MAX_QUEUE_DEPTH = 2
    settings.BATCH_MAX_WAIT_MS = 0
    cached = png_bytes(seed=1)
    post_image(api, cached)
    processor.drain()
    post_image(api, png_bytes(seed=2))
    post_image(api, png_bytes(seed=3))

    response = post_image(api, png_bytes(seed=4))
    error = assert_error(response, 503, "queue_full")
    assert int(response["Retry-After"]) >= 1
    assert error["details"] == {"queue_depth": 2, "max_queue_depth": 2}
    assert Job.objects.count() == 3
    assert len(media_files()) == 3

    hit = post_image(api, cached)  # the cache still answers
    assert hit.status_code == 200
    queued_again = post_image(api, png_bytes(seed=2))  # and so does dedup of queued work
    assert queued_again.status_code == 202


def test_upload_rate_per_address_gets_429_with_retry_after(api, settings):
    settings.UPLOAD_RATE = "3/min"
    for seed in range(3):
        assert post_image(api, png_bytes(seed=seed)).status_code == 202
    response = post_image(api, png_bytes(seed=9))
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert api.get("/api/v1/jobs").status_code == 200  # reads are not throttled
    other = post_image(api, png_bytes(seed=10), REMOTE_ADDR="10.0.0.7")
    assert other.status_code == 202  # per address


def test_idempotency_key_replays_and_refuses_other_bodies(api, processor, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    data = png_bytes(seed=21)
    first = post_image(api, data, HTTP_IDEMPOTENCY_KEY="visit-1")
    assert first.status_code == 202
    replay = post_image(api, data, HTTP_IDEMPOTENCY_KEY="visit-1")
    assert replay.status_code == 202
    assert replay.json()["id"] == first.json()["id"]

    other = post_image(api, png_bytes(seed=22), HTTP_IDEMPOTENCY_KEY="visit-1")
    assert_error(other, 409, "idempotency_key_reused")
    assert Job.objects.count() == 1

    processor.drain()
    done = post_image(api, data, HTTP_IDEMPOTENCY_KEY="visit-1")
    assert done.status_code == 200
    assert done.json()["result"] is not None
    assert IdempotencyKey.objects.get(key="visit-1").job_id == Job.objects.get().id


def test_idempotency_key_of_a_refused_upload_is_released(api):
    assert_error(post_image(api, b"not an image", HTTP_IDEMPOTENCY_KEY="k2"), 415, "unsupported_media_type")
    assert not IdempotencyKey.objects.exists()
    assert post_image(api, png_bytes(seed=5), HTTP_IDEMPOTENCY_KEY="k2").status_code == 202


def test_malformed_idempotency_key(api):
    assert_error(post_image(api, png_bytes(), HTTP_IDEMPOTENCY_KEY="x" * 300), 400, "invalid_idempotency_key")


def test_health_reports_degradations(api, settings, processor):
    body = api.get("/api/v1/health").json()
    assert "no_live_worker" in body["reasons"]
    assert body["status"] == "degraded"
    assert api.get("/api/v1/health?strict=1").status_code == 503

    processor.start()  # reports in
    settings.MAX_QUEUE_DEPTH = 1
    post_image(api, png_bytes(seed=30))
    response = api.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["reasons"] == ["queue_over_depth"]
    settings.MAX_QUEUE_DEPTH = 100
    ok = api.get("/api/v1/health?strict=1")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok"
    assert ok.json()["workers"]["live"] == 1


def test_health_when_the_broker_is_down(api, settings, processor, monkeypatch):
    from worker.celery_app import app

    processor.start()
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    body = api.get("/api/v1/health").json()
    assert body["broker"]["ok"] is False
    assert body["reasons"] == ["broker_unavailable"]
