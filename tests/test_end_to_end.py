"""A real Celery worker process, real broker and database, driven through the HTTP API."""

from __future__ import annotations

import pytest
import requests

from backend.clients.models import Scope
from backend.jobs.models import Job, JobResult
from tests.factories import PNG_JPEG_SAMPLES, authorization, client_and_key, poll_job, sample_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_uploads_reach_succeeded_through_a_real_worker(live_server, start_worker, api_key):
    worker = start_worker()
    worker.wait_ready()
    api = f"{live_server.url}/api/v1"
    auth = authorization(api_key)
    operator = authorization(client_and_key(scope=Scope.OPERATOR)[1])

    health = requests.get(f"{api}/health", headers=operator, timeout=5).json()
    assert health["database"]["ok"] and health["broker"]["ok"]

    created = []
    for name in PNG_JPEG_SAMPLES:
        r = requests.post(
            f"{api}/jobs", files={"image": (name, sample_bytes(name))}, headers=auth, timeout=10
        )
        assert r.status_code == 202, r.text
        assert r.headers["Location"] == r.json()["url"]
        created.append(r.json())

    for job in created:
        done = poll_job(job["url"], headers=auth)
        assert done["status"] == "succeeded", done
        probs = done["result"]["probabilities"]
        assert len(probs) == 18
        assert done["result"]["provenance"]["weights"] == "untrained"
    assert JobResult.objects.count() == len(PNG_JPEG_SAMPLES)
    assert max(JobResult.objects.values_list("timings__batch_size", flat=True)) > 1  # micro-batched

    # The same bytes again: the cached result, at once, same id, no inference.
    again = requests.post(
        f"{api}/jobs",
        files={"image": ("again.png", sample_bytes(PNG_JPEG_SAMPLES[0]))},
        headers=auth,
        timeout=10,
    )
    assert again.status_code == 200
    assert again.json()["id"] == created[0]["id"]
    assert (
        again.json()["result"]["probabilities"]
        == poll_job(created[0]["url"], headers=auth)["result"]["probabilities"]
    )
    assert Job.objects.count() == len(PNG_JPEG_SAMPLES)

    health = requests.get(f"{api}/health", headers=operator, timeout=5).json()
    assert health["status"] == "ok", health
    assert health["workers"]["live"] == 1
    assert health["workers"]["workers"][0]["weights"] == "untrained"
