"""Intake through the API: backpressure (503), Idempotency-Key replays and their races."""

from __future__ import annotations

import hashlib

import pytest
from django.db import IntegrityError

from backend.jobs.models import IdempotencyKey, Job
from tests.factories import assert_error, client_and_key, default_client, png_bytes, post_image

pytestmark = pytest.mark.django_db


def test_queue_over_depth_refuses_new_work_but_serves_cache_hits(api, settings, worker, media_files):
    settings.MAX_QUEUE_DEPTH = 2
    settings.BATCH_MAX_WAIT_MS = 0
    cached = png_bytes(seed=1)
    post_image(api, cached)
    worker.drain()
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


def test_idempotency_key_replays_and_refuses_other_bodies(api, worker, settings):
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

    worker.drain()
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


def test_a_failing_replay_of_an_in_flight_key_does_not_free_it(api, settings):
    """The first request with a key is still in flight (its key row has no job yet). A replay
    that fails (here: the queue is full) must leave the key to the first request: a later
    request with other bytes under that key is still refused."""
    data = png_bytes(seed=31)
    IdempotencyKey.objects.create(
        client=default_client(), key="visit-9", request_sha256=hashlib.sha256(data).hexdigest()
    )
    settings.MAX_QUEUE_DEPTH = 1
    post_image(api, png_bytes(seed=32))  # fills the queue

    assert_error(post_image(api, data, HTTP_IDEMPOTENCY_KEY="visit-9"), 503, "queue_full")
    assert IdempotencyKey.objects.filter(key="visit-9").exists()
    settings.MAX_QUEUE_DEPTH = 100
    assert_error(
        post_image(api, png_bytes(seed=33), HTTP_IDEMPOTENCY_KEY="visit-9"), 409, "idempotency_key_reused"
    )


def test_a_key_freed_between_insert_and_read_is_a_clean_retryable_error(api, monkeypatch):
    """Our insert collides with the first request's key, which then fails and frees it before
    we read it: the client is told to retry (409 + Retry-After), never a 500."""

    def collide(**kwargs):
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(IdempotencyKey.objects, "create", collide)
    response = post_image(api, png_bytes(seed=34), HTTP_IDEMPOTENCY_KEY="visit-10")
    assert_error(response, 409, "idempotency_key_busy")
    assert int(response["Retry-After"]) >= 1
    assert not Job.objects.exists()


def test_a_clients_queue_cap_is_429_while_other_clients_are_served(api, anonymous_api, settings, worker):
    settings.CLIENT_MAX_QUEUED_JOBS = 2
    cached = png_bytes(seed=40)
    post_image(api, cached)
    worker.drain()  # one result in this client's cache
    for seed in (41, 42):
        assert post_image(api, png_bytes(seed=seed)).status_code == 202

    response = post_image(api, png_bytes(seed=43))
    error = assert_error(response, 429, "client_queue_full")
    assert error["details"] == {"queued_jobs": 2, "max_queued_jobs": 2}
    assert int(response["Retry-After"]) >= 1
    assert post_image(api, cached).status_code == 200  # its cache still answers
    _, other = client_and_key(name="hospital-b")
    assert (
        post_image(anonymous_api, png_bytes(seed=43), HTTP_AUTHORIZATION=f"Api-Key {other}").status_code
        == 202
    )

    client = default_client()
    client.max_queued_jobs = 0  # this client: no cap
    client.save(update_fields=["max_queued_jobs"])
    assert post_image(api, png_bytes(seed=44)).status_code == 202
