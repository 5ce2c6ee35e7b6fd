"""No client sees another's jobs, or learns that they exist: not by id, list, dedup or Idempotency-Key;
the one exception is an organisation whose members opted in to share results."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from backend.clients.models import Client, Organisation
from backend.jobs.models import Job
from tests.factories import client_and_key, default_client, png_bytes, post_image

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


def _organisation(*clients: Client, share: bool) -> Organisation:
    org = Organisation.objects.create(name=f"org-{share}", share_inference_cache=share)
    for client in clients:
        client.organisation = org
        client.save()
    return org


def test_clients_of_one_organisation_do_not_share_results_unless_it_opts_in(api, other_api, worker):
    _organisation(default_client(), Client.objects.get(name="hospital-b"), share=False)
    data = png_bytes(seed=8)
    post_image(api, data)
    worker.drain()
    other = post_image(other_api, data)
    assert other.status_code == 202 and other.json()["deduplicated"] is False


def test_an_organisation_that_shares_its_cache_answers_members_without_inference(api, other_api, worker):
    _organisation(default_client(), Client.objects.get(name="hospital-b"), share=True)
    outsider_api = APIClient()
    outsider_api.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_and_key(name='hospital-c')[1]}")
    data = png_bytes(seed=9)
    first = post_image(api, data).json()
    # Not yet analysed: a member's upload is queued as its own job (only results are shared).
    queued = post_image(other_api, data)
    assert queued.status_code == 202 and queued.json()["deduplicated"] is False
    worker.drain()
    mine = api.get(f"/api/v1/jobs/{first['id']}").json()

    member = post_image(other_api, png_bytes(seed=9), "again.png")
    assert member.status_code == 200  # its own queued job: its own dedup
    third_member_key = client_and_key(name="department-c")
    third_member_key[0].organisation = Client.objects.get(name="hospital-b").organisation
    third_member_key[0].save()
    third_api = APIClient()
    third_api.credentials(HTTP_AUTHORIZATION=f"Api-Key {third_member_key[1]}")
    shared = post_image(third_api, data)
    assert shared.status_code == 200
    body = shared.json()
    assert body["status"] == "succeeded" and body["deduplicated"] is True
    assert body["id"] not in (first["id"], queued.json()["id"])
    assert body["result"]["probabilities"] == mine["result"]["probabilities"]
    assert body["result"]["provenance"]["answered_from"] == "organisation_cache"
    assert first["id"] not in shared.content.decode()  # nothing names the member's job
    assert third_api.get(f"/api/v1/jobs/{first['id']}").status_code == 404
    # A client outside the organisation learns nothing.
    outside = post_image(outsider_api, data)
    assert outside.status_code == 202 and outside.json()["deduplicated"] is False
