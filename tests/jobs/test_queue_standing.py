"""Honest status: a queued job's `queue` object from the live workers' measured throughput
(their heartbeats), `no_worker` when none is live, and the worker's own measurement."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from backend.jobs import selectors
from backend.jobs.model_identity import current_model_version
from backend.jobs.models import Job, WorkerHeartbeat
from backend.jobs.services import workers
from tests.factories import client_and_key, png_bytes, post_image
from worker.batch_loop import Throughput

pytestmark = pytest.mark.django_db

KEYS = {"jobs_ahead", "workers", "images_per_second", "eta_seconds", "state", "finished_per_second"}


def _beat(worker_id: str, *, rate: float | None, model_version: str | None = None, seen_ago: float = 0.0):
    workers.worker_heartbeat(
        worker_id=worker_id,
        hostname="h",
        pid=1,
        model_version=model_version or current_model_version(),
        info={"images_per_second": rate},
    )
    if seen_ago:
        WorkerHeartbeat.objects.filter(worker_id=worker_id).update(
            last_seen_at=timezone.now() - timedelta(seconds=seen_ago)
        )


def test_with_no_live_worker_the_state_says_so_and_there_is_no_number(api, settings):
    WorkerHeartbeat.objects.all().delete()  # an earlier test's real worker may have left a live row
    for seed in range(3):
        body = post_image(api, png_bytes(seed=seed)).json()
    _beat("stale", rate=50.0, seen_ago=settings.WORKER_LIVE_SECONDS + 5)  # not live any more
    queue = api.get(body["url"]).json()["queue"]
    assert set(queue) == KEYS
    assert queue["state"] == "no_worker" and queue["workers"] == 0
    assert queue["eta_seconds"] is None and queue["images_per_second"] is None
    assert queue["jobs_ahead"] == 2


def test_the_estimate_divides_by_the_live_workers_measured_throughput(api):
    for seed in range(5):
        body = post_image(api, png_bytes(seed=10 + seed)).json()
    _beat("a", rate=6.0)
    _beat("b", rate=4.0)
    _beat("no-figure-yet", rate=None)  # counted as a worker, adds no throughput
    _beat("other-model", rate=100.0, model_version="another-model@x")
    queue = api.get(body["url"]).json()["queue"]
    assert queue["state"] == "waiting" and queue["workers"] == 3
    assert queue["images_per_second"] == 10.0
    assert queue["jobs_ahead"] == 4
    # 5 jobs up to its own on 3 workers taking one image each: 2 rounds of 3 images at 10 a second.
    assert queue["eta_seconds"] == pytest.approx(0.6)
    # Not a queued job: no standing.
    job = Job.objects.get(id=body["id"])
    job.status = "SUCCEEDED"
    assert selectors.queue_standing(job) is None


def test_a_job_ends_with_its_batch_so_the_estimate_counts_whole_batches():
    # One worker, batches of 8 at 20 images a second: the first 8 jobs end together, at 0.4 s.
    assert [
        selectors.eta_seconds(ahead=a, workers=1, images_per_second=20.0, batch=8) for a in (0, 7, 8)
    ] == [
        0.4,
        0.4,
        0.8,
    ]
    assert selectors.eta_seconds(ahead=9, workers=1, images_per_second=10.0) == 1.0  # batches of one
    # Two workers of batch 4 at 20 a second together: rounds of 8 images, 0.4 s each.
    assert selectors.eta_seconds(ahead=8, workers=2, images_per_second=20.0, batch=4) == 0.8


def test_the_worker_reports_its_measured_throughput_in_its_heartbeat(api, worker):
    worker.start()
    info = WorkerHeartbeat.objects.get(worker_id=worker.worker_id).info
    assert info["images_per_second"] > 0  # the engine's benchmark figure before any batch
    seeded = worker.loop.throughput.value
    for seed in range(4):
        post_image(api, png_bytes(seed=20 + seed))
    assert worker.drain() == 4
    assert worker.loop.throughput.value != seeded  # measured on the batches it ran
    worker._heartbeat()
    info = WorkerHeartbeat.objects.get(worker_id=worker.worker_id).info
    assert info["images_per_second"] == pytest.approx(worker.loop.throughput.value, rel=1e-3)


def test_throughput_is_exponentially_weighted():
    t = Throughput()
    t.record(0, 1.0)
    assert t.value is None
    t.record(10, 1.0)
    assert t.value == 10.0
    t.record(20, 1.0)
    assert t.value == pytest.approx(10.0 + Throughput.ALPHA * 10.0)
    t.record(5, 0.0)  # no time measured: ignored
    assert t.value == pytest.approx(13.0)


# --- a real worker, paused and resumed --------------------------------------------------------

IMAGE_MS = 100  # the fake model's cost per image: the worker's speed, known and steady
JOBS = 24


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_estimate_is_within_a_factor_of_two_of_the_wait_of_a_paused_and_resumed_worker(
    start_worker, start_web
):
    """The issue's case: the worker is paused while jobs arrive, its estimate is read, the worker
    resumes, and the last job's actual wait is measured against what was said."""
    _, key = client_and_key("eta-client")
    headers = {"Authorization": f"Api-Key {key}"}
    env = {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "0", "CXRQ_FAKE_IMAGE_MS": str(IMAGE_MS)}
    env |= {"CXRQ_BATCH_MAX_SIZE": "8"}
    worker = start_worker(env)
    web = start_web()
    worker.wait_ready()
    web.wait_ready()
    beat = WorkerHeartbeat.objects.order_by("-started_at").first()
    assert beat is not None and beat.info["images_per_second"] > 0

    os.killpg(worker.proc.pid, signal.SIGSTOP)  # paused: its heartbeat stays live for a while
    try:
        session = requests.Session()
        session.headers.update(headers)
        urls = []
        for seed in range(JOBS):
            files = {"image": (f"{seed}.png", png_bytes(seed=100 + seed))}
            response = session.post(f"{web.url}/api/v1/jobs", files=files, timeout=30)
            assert response.status_code == 202, response.text
            urls.append(response.json()["url"])
        queue = session.get(urls[-1], timeout=30).json()["queue"]
    finally:
        resumed = time.monotonic()
        os.killpg(worker.proc.pid, signal.SIGCONT)
    assert queue["state"] == "waiting" and queue["workers"] >= 1
    assert queue["jobs_ahead"] == JOBS - 1
    estimate = queue["eta_seconds"]
    assert estimate is not None and estimate > 0

    deadline = time.monotonic() + 120
    last = {"status": "queued"}
    while last["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        last = session.get(urls[-1], params={"wait": 30}, timeout=40).json()  # answered when it ends
    waited = time.monotonic() - resumed
    assert last["status"] == "succeeded"
    ratio = waited / estimate
    print(
        f"eta_seconds={estimate} waited_s={waited:.2f} ratio={ratio:.2f} images_per_second={queue['images_per_second']}"
    )
    assert 0.5 <= ratio <= 2.0, (estimate, waited, queue)
