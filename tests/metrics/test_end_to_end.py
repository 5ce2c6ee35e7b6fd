"""Both endpoints scraped around real work: the real web server (two processes), a real worker
(two pool children, fake model), the real dispatcher delivering to a real receiver."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import requests

from tests.factories import authorization, png_bytes, poll_job
from tests.webhooks.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _labels(**labels: str) -> frozenset:
    return frozenset(labels.items())


def test_web_and_worker_series_move_after_real_jobs(
    start_web, start_worker, start_dispatcher, api_key, parse_metrics
):
    receiver = Receiver(script=[500]).start()  # the first attempt fails, the retry is delivered
    try:
        _run(start_web, start_worker, start_dispatcher, api_key, parse_metrics, receiver)
    finally:
        receiver.stop()


def _run(start_web, start_worker, start_dispatcher, api_key, parse_metrics, receiver):
    web = start_web(workers=2)
    web.wait_ready()
    auth = authorization(api_key)

    def scrape_web() -> dict:
        response = requests.get(f"{web.url}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        return parse_metrics(response.text)

    # Jobs queued before any worker runs: the queue gauges see them.
    created = []
    for seed, priority in ((1, "routine"), (2, "routine"), (3, "routine"), (4, "stat")):
        fields = {"priority": priority}
        if seed == 1:
            fields["callback_url"] = receiver.url
        r = requests.post(
            f"{web.url}/api/v1/jobs",
            files={"image": (f"{seed}.png", png_bytes(seed=seed))},
            data=fields,
            headers=auth,
            timeout=10,
        )
        assert r.status_code == 202, r.text
        created.append(r.json())
    before = scrape_web()
    assert before[("cxrq_queue_depth", _labels(priority="routine", client="hospital-a"))] == 3
    assert before[("cxrq_queue_depth", _labels(priority="stat", client="hospital-a"))] == 1
    assert before[("cxrq_jobs", _labels(status="queued"))] == 4
    assert before[("cxrq_workers_live", frozenset())] == 0

    port = _free_port()
    worker = start_worker(
        {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "20", "CXRQ_WORKER_METRICS_PORT": str(port)},
        concurrency=2,
    )
    dispatcher = start_dispatcher({"CXRQ_WEBHOOK_RETRY_BASE_SECONDS": "0.3"})
    worker.wait_ready()
    for job in created:
        assert poll_job(job["url"], headers=auth)["status"] == "succeeded"
    again = requests.post(
        f"{web.url}/api/v1/jobs", files={"image": ("again.png", png_bytes(seed=1))}, headers=auth, timeout=10
    )
    assert again.status_code == 200 and again.json()["deduplicated"] is True
    receiver.wait_for(2)
    deadline = time.monotonic() + 30
    while scrape_web().get(("cxrq_webhook_deliveries", _labels(status="delivered"))) != 1:
        assert time.monotonic() < deadline, dispatcher.log[-3000:]
        time.sleep(0.2)

    # Every scrape sums both web processes: the same counts whichever process answers.
    scrapes = [scrape_web() for _ in range(6)]
    for after in scrapes:
        assert after[("cxrq_uploads_total", _labels(outcome="new"))] == 4
        assert after[("cxrq_uploads_total", _labels(outcome="deduplicated"))] == 1
        assert after[("django_http_requests_total_by_method_total", _labels(method="POST"))] == 5
    after = scrapes[-1]
    assert after[("cxrq_jobs", _labels(status="queued"))] == 0
    assert after[("cxrq_jobs", _labels(status="succeeded"))] == 4
    assert not any(name == "cxrq_queue_depth" for name, _ in after)
    assert after[("cxrq_queue_oldest_age_seconds", _labels(priority="routine"))] == 0
    assert after[("cxrq_workers_live", frozenset())] == 2  # one heartbeat per pool child
    ages = [v for (name, _), v in after.items() if name == "cxrq_worker_heartbeat_age_seconds"]
    assert len(ages) == 2 and all(0 <= age < 10 for age in ages)
    assert after[("cxrq_webhook_deliveries", _labels(status="pending"))] == 0
    assert after[("cxrq_webhook_recent_attempts", _labels(outcome="5xx"))] == 1
    assert after[("cxrq_webhook_recent_attempts", _labels(outcome="2xx"))] == 1

    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, worker.log[-3000:]
    mine = parse_metrics(response.text)
    assert mine[("cxrq_worker_batch_size_sum", frozenset())] == 4
    assert 1 <= mine[("cxrq_worker_batch_size_count", frozenset())] <= 4
    assert mine[("cxrq_worker_jobs_total", _labels(outcome="succeeded"))] == 4
    for phase in ("decode", "preprocess"):
        assert mine[("cxrq_worker_phase_seconds_count", _labels(phase=phase))] == 4
    for phase in ("infer", "postprocess", "store"):
        assert mine[("cxrq_worker_phase_seconds_count", _labels(phase=phase))] >= 1
    ended = {
        dict(labels)["priority"]: v
        for (name, labels), v in mine.items()
        if name == "cxrq_job_end_to_end_seconds_count" and dict(labels)["status"] == "succeeded"
    }
    assert ended == {"routine": 3, "stat": 1}
    assert mine[("cxrq_job_end_to_end_seconds_sum", _labels(status="succeeded", priority="stat"))] > 0

    # Each server kept its processes' files in a folder of its own, gone once it stopped.
    web.stop()
    worker.stop()
    for log in (web.log, worker.log):
        (folder,) = [
            line.split("path=")[1].split()[0]
            for line in log.splitlines()
            if "event=metrics_directory" in line
        ]
        assert not Path(folder).exists(), log[-3000:]
