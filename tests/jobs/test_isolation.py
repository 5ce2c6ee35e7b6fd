"""No client sees another's jobs, or learns that they exist: not by id, list, dedup or Idempotency-Key."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from backend.jobs.models import Job
from tests.factories import client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_api() -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_and_key(name='hospital-b')[1]}")
    return api


def test_another_clients_job_is_404_byte_for_byte_like_an_unknown_id(api, other_api, worker):
    mine = post_image(api, png_bytes(seed=1)).json()
    worker.drain()
    theirs = other_api.get(f"/api/v1/jobs/{mine['id']}")
    unknown = other_api.get("/api/v1/jobs/7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content == unknown.content
    assert api.get(f"/api/v1/jobs/{mine['id']}").json()["status"] == "succeeded"


def test_the_list_shows_only_the_callers_jobs(api, other_api):
    mine = {post_image(api, png_bytes(seed=s)).json()["id"] for s in (2, 3)}
    theirs = {post_image(other_api, png_bytes(seed=s)).json()["id"] for s in (4,)}
    assert {j["id"] for j in api.get("/api/v1/jobs").json()["results"]} == mine
    assert {j["id"] for j in other_api.get("/api/v1/jobs").json()["results"]} == theirs
    assert api.get("/api/v1/jobs", {"status": "queued"}).json()["count"] == 2


def test_dedup_is_per_client(api, other_api, worker):
    """The same bytes from two clients are two jobs: a cache hit would tell B that A sent them."""
    data = png_bytes(seed=5)
    first = post_image(api, data)
    worker.drain()
    assert post_image(api, data).status_code == 200  # A's own cache hit
    other = post_image(other_api, data)
    assert other.status_code == 202 and other.json()["deduplicated"] is False
    assert other.json()["id"] != first.json()["id"]
    assert Job.objects.count() == 2


def test_idempotency_keys_are_per_client(api, other_api):
    a = post_image(api, png_bytes(seed=6), HTTP_IDEMPOTENCY_KEY="visit-1")
    b = post_image(other_api, png_bytes(seed=7), HTTP_IDEMPOTENCY_KEY="visit-1")
    assert a.status_code == b.status_code == 202  # B's key is B's own: no 409 from A's use
    assert a.json()["id"] != b.json()["id"]
