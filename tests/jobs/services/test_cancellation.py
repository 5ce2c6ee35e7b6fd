"""Cancel: a queued job at once, an in-progress one when its batch returns, an ended one never."""

from __future__ import annotations

import pytest

from backend.jobs.models import Job, JobResult, JobStatus
from backend.jobs.services import claims, leases
from backend.jobs.services.claims import InferenceOutcome
from tests.factories import assert_error, claim, client_and_key, expire, png_bytes, post_image

pytestmark = pytest.mark.django_db


def _cancel(api, job_id):
    return api.post(f"/api/v1/jobs/{job_id}/cancel")


def _outcome(job_id) -> InferenceOutcome:
    return InferenceOutcome(job_id=job_id, probabilities={"Atelectasis": 0.5}, provenance={}, timings={})


def test_a_queued_job_is_cancelled_and_never_inferred(api, worker):
    job = post_image(api, png_bytes(seed=1)).json()
    response = _cancel(api, job["id"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and body["error"]["code"] == "cancelled"
    worker.drain()
    assert Job.objects.get(pk=job["id"]).status == JobStatus.CANCELLED
    assert not JobResult.objects.exists()
    # Cancelling again is harmless; the bytes may be sent again as a new job.
    assert _cancel(api, job["id"]).json()["status"] == "cancelled"
    again = post_image(api, png_bytes(seed=1))
    assert again.status_code == 202 and again.json()["id"] != job["id"]


def test_an_in_progress_job_ends_cancelled_when_its_batch_returns_and_its_result_is_dropped(api):
    first = post_image(api, png_bytes(seed=2)).json()
    second = post_image(api, png_bytes(seed=3)).json()
    batch = claim(2)
    response = _cancel(api, first["id"])
    assert response.status_code == 200
    assert response.json()["status"] == "in_progress" and response.json()["cancel_requested_at"]
    stored = claims.job_store_results(batch=batch, outcomes=[_outcome(j) for j in batch.job_ids])
    assert [str(i) for i in stored] == [second["id"]]
    assert api.get(f"/api/v1/jobs/{first['id']}").json()["status"] == "cancelled"
    assert api.get(f"/api/v1/jobs/{second['id']}").json()["status"] == "succeeded"
    assert [str(i) for i in JobResult.objects.values_list("job_id", flat=True)] == [second["id"]]


@pytest.mark.parametrize("move", ["release", "retry_later", "reap", "fail"])
def test_a_cancelled_in_progress_job_never_goes_back_to_the_queue(api, move):
    job = post_image(api, png_bytes(seed=4)).json()
    batch = claim(1)
    _cancel(api, job["id"])
    if move == "release":
        claims.job_release(job_ids=batch.job_ids, claim_token=batch.claim_token)
    elif move == "retry_later":
        claims.job_retry_later(job_ids=batch.job_ids, claim_token=batch.claim_token, code="x", message="y")
    elif move == "fail":
        claims.job_fail(job_id=batch.job_ids[0], claim_token=batch.claim_token, code="x", message="y")
    else:
        expire(batch)
        leases.job_reap_expired()
    assert Job.objects.get(pk=job["id"]).status == JobStatus.CANCELLED


def test_an_ended_job_is_409_and_another_clients_is_404(api, anonymous_api, worker):
    job = post_image(api, png_bytes(seed=5)).json()
    worker.drain()
    refused = _cancel(api, job["id"])
    assert_error(refused, 409, "job_not_cancellable")
    assert refused.json()["error"]["details"] == {"status": "succeeded"}
    other = post_image(api, png_bytes(seed=6)).json()
    _, key = client_and_key(name="hospital-b")
    theirs = anonymous_api.post(f"/api/v1/jobs/{other['id']}/cancel", HTTP_AUTHORIZATION=f"Api-Key {key}")
    unknown = anonymous_api.post(
        "/api/v1/jobs/7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11/cancel", HTTP_AUTHORIZATION=f"Api-Key {key}"
    )
    assert theirs.status_code == unknown.status_code == 404 and theirs.content == unknown.content
    assert Job.objects.get(pk=other["id"]).status == JobStatus.QUEUED


def test_a_read_key_cannot_cancel(api, anonymous_api):
    from backend.clients import services
    from tests.factories import default_client

    job = post_image(api, png_bytes(seed=7)).json()
    read = services.api_key_create(client=default_client(), name="ro", scope="read").key
    assert_error(
        anonymous_api.post(f"/api/v1/jobs/{job['id']}/cancel", HTTP_AUTHORIZATION=f"Api-Key {read}"),
        403,
        "insufficient_scope",
    )
