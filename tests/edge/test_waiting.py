"""Long-poll through the real server: `?wait=N` answers when the job ends, ETag / 304, no
thread held while waiting."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from django.db import connection

from backend.jobs.services import claims
from backend.jobs.services.claims import InferenceOutcome
from tests.edge.test_server import Server, _serve
from tests.factories import claim, png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    # Two Django threads: waiters must not need one each.
    yield from _serve(tmp_path, {"CXRQ_WEB_THREADS": "2"})


def _queued_job(server: Server, seed: int) -> str:
    response = requests.post(
        f"{server.url}/api/v1/jobs",
        files={"image": ("w.png", png_bytes(seed=seed))},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _finish_all_queued() -> None:
    batch = claim(100)
    outcomes = [
        InferenceOutcome(job_id=i, probabilities={"Atelectasis": 0.5}, provenance={}, timings={})
        for i in batch.job_ids
    ]
    claims.job_store_results(batch=batch, outcomes=outcomes)
    connection.close()  # it runs in a timer's thread: its connection would outlive the test


def test_a_waiting_client_is_answered_when_its_job_ends(server):
    job_id = _queued_job(server, 1)
    threading.Timer(1.5, _finish_all_queued).start()
    t0 = time.monotonic()
    response = requests.get(
        f"{server.url}/api/v1/jobs/{job_id}?wait=20", headers=server.headers(), timeout=30
    )
    elapsed = time.monotonic() - t0
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert 1.4 < elapsed < 3.5, elapsed  # when it ended, not when the wait ran out
    assert "x-cxrq-wait" not in {k.lower() for k in response.headers}


def test_a_wait_that_runs_out_answers_the_job_as_it_stands(server):
    job_id = _queued_job(server, 2)
    t0 = time.monotonic()
    response = requests.get(f"{server.url}/api/v1/jobs/{job_id}?wait=2", headers=server.headers(), timeout=30)
    assert response.json()["status"] == "queued" and 1.9 < time.monotonic() - t0 < 4.5


def test_etag_gives_304_and_waits_for_a_change(server):
    job_id = _queued_job(server, 3)
    first = requests.get(f"{server.url}/api/v1/jobs/{job_id}", headers=server.headers(), timeout=10)
    etag = first.headers["ETag"]
    same = requests.get(
        f"{server.url}/api/v1/jobs/{job_id}", headers=server.headers() | {"If-None-Match": etag}, timeout=10
    )
    assert same.status_code == 304 and not same.content
    threading.Timer(1.0, _finish_all_queued).start()
    changed = requests.get(
        f"{server.url}/api/v1/jobs/{job_id}?wait=15",
        headers=server.headers() | {"If-None-Match": etag},
        timeout=30,
    )
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_many_waiters_hold_no_thread_health_and_uploads_still_answer(server):
    """100 clients waiting on queued jobs with two Django threads per process."""
    job_ids = [_queued_job(server, 100 + i) for i in range(5)]

    def wait(i: int) -> int:
        return requests.get(
            f"{server.url}/api/v1/jobs/{job_ids[i % 5]}?wait=8", headers=server.headers(), timeout=30
        ).status_code

    with cf.ThreadPoolExecutor(100) as pool:
        waiters = [pool.submit(wait, i) for i in range(100)]
        time.sleep(2)
        t0 = time.monotonic()
        assert requests.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
        assert _queued_job(server, 999)
        assert time.monotonic() - t0 < 2.0
        assert [w.result() for w in waiters] == [200] * 100


def test_a_batch_wait_is_answered_when_its_last_job_ends(server):
    from backend.clients.models import Client
    from backend.jobs.services import cancellation

    response = requests.post(
        f"{server.url}/api/v1/batches",
        files=[("images", (f"{i}.png", png_bytes(seed=200 + i))) for i in range(3)],
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    first = batch["items"][0]["job"]["id"]

    # One job ends at 1 s (the wait goes on: two are left), the other two at 2.5 s.
    def cancel_first() -> None:
        cancellation.job_cancel(client=Client.objects.get(name="edge"), job_id=first)
        connection.close()

    threading.Timer(1.0, cancel_first).start()
    threading.Timer(2.5, _finish_all_queued).start()
    t0 = time.monotonic()
    url = f"{server.url}/api/v1/batches/{batch['id']}?wait=20"
    done = requests.get(url, headers=server.headers(), timeout=30)
    elapsed = time.monotonic() - t0
    assert done.status_code == 200 and done.json()["done"] is True, done.text
    counts = done.json()["counts"]
    assert (counts["succeeded"], counts["cancelled"], counts["queued"]) == (2, 1, 0)
    assert 2.4 < elapsed < 4.5, elapsed
