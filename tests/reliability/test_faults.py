"""Faults with real processes: killed, frozen and terminated workers, poison images,
broker and database restarts, overload. After each, the invariant checker must be clean.

Workers run the fast fake model (worker/runtime/fake.py): the real pipeline around
the forward pass (claim, decode, preprocess, store) with a configurable batch cost.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.factories import png_bytes, white_png
from tests.reliability.harness import LEASE_EXPIRY, STACK_CLIENT, free_port, port_open, wait_for

pytestmark = pytest.mark.slow


def upload_many(stack, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        r = stack.upload(png_bytes(size=(128, 128), seed=i))
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def count_status(stack, status: str) -> int:
    return requests.get(
        f"{stack.web_url}/api/v1/jobs", params={"status": status}, headers=stack.headers(), timeout=10
    ).json()["count"]


def assert_all_succeeded_once(stack, ids: list[str], timeout: float = 60) -> dict[str, dict]:
    done = stack.wait_terminal(ids, timeout)
    statuses = Counter(j["status"] for j in done.values())
    assert statuses == {"succeeded": len(ids)}, statuses
    assert all(len(j["result"]["probabilities"]) == 18 for j in done.values())
    assert "event=results_dropped" not in stack.all_logs()  # nothing was inferred twice to completion
    report = stack.check_invariants()
    assert report["counts"]["results"] == report["counts"]["succeeded"]
    return done


def test_sigkill_mid_batch_another_worker_takes_over(make_stack, shared_database, private_redis):
    stack = make_stack(
        shared_database.url,
        private_redis.url,
        CXRQ_BATCH_MAX_SIZE="16",
        CXRQ_BATCH_MAX_WAIT_MS="3000",
        **LEASE_EXPIRY,
    )
    stack.start_web()
    doomed = stack.start_worker("doomed", CXRQ_FAKE_BATCH_MS="30000")
    ids = upload_many(stack, 16)
    wait_for(lambda: count_status(stack, "in_progress") == 16, 30, what="a batch of 16 in progress")

    stack.signal(doomed, signal.SIGKILL)
    doomed.wait(10)
    stack.start_worker("rescuer", CXRQ_FAKE_BATCH_MS="20", CXRQ_BATCH_MAX_WAIT_MS="0")
    done = assert_all_succeeded_once(stack, ids)
    assert {j["attempts"] for j in done.values()} == {2}


def test_frozen_worker_cannot_store_late_results(make_stack, shared_database, private_redis):
    stack = make_stack(shared_database.url, private_redis.url, CXRQ_BATCH_MAX_WAIT_MS="1000", **LEASE_EXPIRY)
    stack.start_web()
    frozen = stack.start_worker("frozen", CXRQ_FAKE_BATCH_MS="4000")
    ids = upload_many(stack, 4)
    wait_for(lambda: count_status(stack, "in_progress") == 4, 30, what="batch in progress")

    stack.signal(frozen, signal.SIGSTOP)
    rescuer = stack.start_worker("rescuer", CXRQ_FAKE_BATCH_MS="20")
    done = stack.wait_terminal(ids, 60)
    assert {j["status"] for j in done.values()} == {"succeeded"}
    stored_by = stack.stored_by(ids)

    stack.signal(frozen, signal.SIGCONT)
    wait_for(lambda: "event=results_dropped" in stack.log_of(frozen), 30, what="the late worker to try")
    after = {i: stack.job(i) for i in ids}
    assert stack.stored_by(ids) == stored_by and len(set(stored_by.values())) == 1  # the rescuer's
    assert all(after[i]["result"] == done[i]["result"] for i in ids)  # nothing overwritten
    assert "reason=claim_lost" in stack.log_of(frozen)
    stack.check_invariants()
    assert rescuer.poll() is None


@pytest.mark.parametrize(
    ("poison", "codes"),
    [
        ("crash", {"max_attempts_exceeded"}),  # the process dies: its lease lapses
        ("hang", {"inference_failed", "max_attempts_exceeded"}),  # cut by the batch time limit
        ("raise", {"inference_failed"}),  # the forward pass raises: the batch goes back
    ],
)
def test_poison_image_fails_alone_after_max_attempts(
    make_stack, shared_database, private_redis, poison, codes
):
    stack = make_stack(
        shared_database.url,
        private_redis.url,
        CXRQ_FAKE_POISON=poison,
        CXRQ_BATCH_MAX_WAIT_MS="1500",
        CXRQ_MAX_ATTEMPTS="3",
        CXRQ_BATCH_TIME_LIMIT_SECONDS="2",
        CXRQ_DRAIN_MAX_SECONDS="1",
        **LEASE_EXPIRY,
    )
    stack.start_web()
    stack.start_worker()
    good = upload_many(stack, 5)
    poison_id = stack.upload(white_png(), "poison.png").json()["id"]

    done = stack.wait_terminal([*good, poison_id], 150)
    assert done[poison_id]["status"] == "failed"
    assert done[poison_id]["attempts"] == 3
    assert done[poison_id]["error"]["code"] in codes
    assert {done[i]["status"] for i in good} == {"succeeded"}
    assert max(done[i]["attempts"] for i in good) == 2  # with the poison once, then alone
    stack.check_invariants()


def test_broker_flush_restart_and_outage_lose_nothing(make_stack, shared_database, private_redis):
    stack = make_stack(
        shared_database.url, private_redis.url, CXRQ_BATCH_MAX_SIZE="4", CXRQ_BATCH_MAX_WAIT_MS="0"
    )
    stack.start_web()
    stack.start_worker(CXRQ_FAKE_BATCH_MS="400")
    ids = upload_many(stack, 24)

    private_redis.flushall()  # queued wake-ups vanish
    private_redis.restart(down_seconds=1)
    ids += upload_many(stack, 4, start=100)

    private_redis.stop()  # broker down: uploads still accepted, reads and cache hits still served
    started = time.monotonic()
    during = upload_many(stack, 6, start=200)
    upload_seconds = time.monotonic() - started
    assert stack.job(ids[0])["id"] == ids[0]
    health = requests.get(f"{stack.web_url}/api/v1/health", timeout=10)
    assert health.status_code == 200
    assert "broker_unavailable" in health.json()["reasons"]
    assert requests.get(f"{stack.web_url}/api/v1/health?strict=1", timeout=10).status_code == 503
    private_redis.start()

    assert_all_succeeded_once(stack, ids + during, timeout=120)
    assert upload_seconds < 6 * 1.5, upload_seconds  # the circuit breaker keeps uploads fast


def test_postgres_restart_under_load_recovers_without_help(make_stack, private_postgres, private_redis):
    stack = make_stack(private_postgres.url, private_redis.url, CXRQ_BATCH_MAX_WAIT_MS="50")
    stack.start_web()
    stack.start_worker(CXRQ_FAKE_BATCH_MS="100")
    accepted: list[str] = []
    statuses: Counter = Counter()
    stop = threading.Event()

    def load() -> None:
        i = 1000
        while not stop.is_set():
            try:
                r = stack.upload(png_bytes(size=(128, 128), seed=i))
                statuses[r.status_code] += 1
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
            except requests.RequestException:
                statuses["connection_error"] += 1
            i += 1
            time.sleep(0.05)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(3)
    private_postgres.restart(down_seconds=2)
    time.sleep(4)
    stop.set()
    loader.join(30)

    assert set(statuses) <= {202, 503}, statuses  # a database outage is a 503, never a 500
    assert statuses[202] > 20
    wait_for(
        lambda: requests.get(f"{stack.web_url}/api/v1/health", timeout=5).status_code == 200,
        30,
        what="web healthy again",
    )
    assert_all_succeeded_once(stack, accepted, timeout=120)


@pytest.mark.parametrize("target", ["main process", "process group"])
def test_sigterm_mid_batch_exits_within_ten_seconds_with_nothing_stranded(
    make_stack, shared_database, private_redis, target
):
    """A batch of 2 runs (3 s), the next 2 are claimed ahead. SIGTERM to the main Celery
    process (docker stop, systemd) or to its process group (Ctrl-C of make run): the batch in
    hand is stored, the one claimed ahead goes back with its attempt undone, and the worker
    is gone well within docker's 10 s grace period."""
    stack = make_stack(
        shared_database.url,
        private_redis.url,
        CXRQ_BATCH_MAX_SIZE="2",
        CXRQ_BATCH_MAX_WAIT_MS="500",
        CXRQ_PREPROCESS_WORKERS="1",
    )
    stack.start_web()
    # All four queued before the worker starts: its first batch takes two and claims the other
    # two ahead, whatever the gaps between uploads (uploads landing after the claim-ahead were
    # this test's race).
    ids = upload_many(stack, 4)
    worker = stack.start_worker(CXRQ_FAKE_BATCH_MS="3000")
    wait_for(
        lambda: count_status(stack, "in_progress") == 4, 30, what="a batch running and one claimed ahead"
    )

    stack.signal(worker, signal.SIGTERM, group=(target == "process group"))
    started = time.monotonic()
    worker.wait(10)  # raises TimeoutExpired past docker's default grace period
    assert time.monotonic() - started < 10
    jobs = {i: stack.job(i) for i in ids}
    assert Counter(j["status"] for j in jobs.values()) == {"succeeded": 2, "queued": 2}, jobs
    assert all(j["attempts"] == 0 for j in jobs.values() if j["status"] == "queued")  # released, not lapsed
    stack.start_worker(CXRQ_FAKE_BATCH_MS="20")
    assert_all_succeeded_once(stack, ids)


def test_make_run_stops_on_one_sigterm_to_its_process_group(make_stack, shared_database, private_redis):
    """`make run` (manage.py runstack: runserver + `python -m worker`), stopped as an operator
    would, mid-batch: every process of the group is gone within 10 s, no job left in progress."""
    stack = make_stack(
        shared_database.url, private_redis.url, CXRQ_BATCH_MAX_WAIT_MS="0", CXRQ_FAKE_BATCH_MS="3000"
    )
    port = free_port()
    run = stack.spawn(
        "runstack", [sys.executable, "manage.py", "runstack", "--port", str(port), "--dicom-port", "0"]
    )
    stack.web_url = f"http://127.0.0.1:{port}"
    wait_for(lambda: b"event=worker_started" in Path(run.log_path).read_bytes(), 90, what="runstack worker")
    wait_for(lambda: port_open(port), 30, what="runstack web")
    upload_many(stack, 3)
    wait_for(lambda: count_status(stack, "in_progress") >= 1, 30, what="a batch in progress")

    stack.signal(run, signal.SIGTERM, group=True)
    started = time.monotonic()
    run.wait(10)
    wait_for(
        lambda: not subprocess.run(["pgrep", "-g", str(run.pid)], capture_output=True).stdout.strip(),
        max(0.1, 10 - (time.monotonic() - started)),
        what="every process of the group to exit",
    )
    report = stack.check_invariants()
    assert report["counts"]["in progress"] == 0, report
    assert report["counts"]["queued"] + report["counts"]["succeeded"] == 3, report


def test_four_workers_two_thousand_jobs_each_exactly_once(make_stack, shared_database, private_redis):
    """Four workers share 2,000 queued jobs: each is claimed, run and stored exactly once.
    Nothing here is about expiry, so the stack's long lease applies: a heartbeat starved of
    CPU for a few seconds on two loaded cores must not turn into a second attempt."""
    stack = make_stack(
        shared_database.url,
        private_redis.url,
        CXRQ_BATCH_MAX_SIZE="8",
        CXRQ_BATCH_MAX_WAIT_MS="0",
        CXRQ_FAKE_BATCH_MS="2",
        CXRQ_FAKE_IMAGE_MS="0",
    )
    # All four are up before the jobs arrive: on loaded cores the first two to start could
    # otherwise finish 2,000 jobs before the last is ready, and nothing would be shared.
    workers = [stack.start_worker(f"w{i}") for i in range(4)]
    seeded = stack.manage(
        "shell", "-c", SEED_JOBS.replace("__N__", "2000").replace("__CLIENT__", STACK_CLIENT)
    )
    assert "seeded 2000" in seeded.stdout, seeded.stdout + seeded.stderr

    wait_for(
        lambda: '"succeeded": 2000' in stack.manage("jobs_check", check=False).stdout,
        300,
        interval=2,
        what="2000 jobs to succeed",
    )
    report = stack.check_invariants()
    assert report["counts"]["results"] == 2000
    per_worker = []
    for w in workers:
        ids = [
            i
            for line in stack.log_of(w).splitlines()
            if "event=batch_done" in line
            for i in line.split("job_ids=")[1].split()[0].split(",")
        ]
        per_worker.append(ids)
    all_ids = [i for ids in per_worker for i in ids]
    twice = [i for i, n in Counter(all_ids).items() if n > 1]
    assert not twice, [line for line in stack.all_logs().splitlines() if twice[0] in line or "lease" in line][
        :20
    ]
    assert len(all_ids) == len(set(all_ids)) == 2000  # no job claimed twice
    assert sum(1 for ids in per_worker if ids) >= 3  # the work really was shared
    assert "event=results_dropped" not in stack.all_logs()
    attempts = stack.manage("shell", "-c", ATTEMPTS).stdout.split("ATTEMPTS=")[1].strip()
    assert attempts == "{1: 2000}", attempts


SEED_JOBS = """
import io
from PIL import Image
from django.core.files.uploadedfile import SimpleUploadedFile
from backend.clients.models import Client
from backend.jobs.services import intake
client = Client.objects.get(name="__CLIENT__")
base = Image.linear_gradient("L").resize((96, 96))
for i in range(__N__):
    img = base.copy()
    img.putpixel((i % 96, (i // 96) % 96), 255)
    img.putpixel(((i // 9216) % 96, 0), 0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    intake.job_create(client=client, upload=SimpleUploadedFile(f"{i}.png", buf.getvalue()))
print("seeded", __N__)
"""

ATTEMPTS = """
from collections import Counter
from backend.jobs.models import Job
print("ATTEMPTS=", dict(Counter(Job.objects.values_list("attempts", flat=True))))
"""


def _concurrently(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    out: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_fifty_concurrent_identical_uploads_and_idempotency_keys(make_stack, shared_database, private_redis):
    stack = make_stack(shared_database.url, private_redis.url, CXRQ_BATCH_MAX_WAIT_MS="200")
    stack.start_web(threads=16, workers=2)
    stack.start_worker(CXRQ_FAKE_BATCH_MS="20")

    same = png_bytes(size=(128, 128), seed=4242)
    responses = _concurrently(50, lambda i: stack.upload(same))
    assert {r.status_code for r in responses} <= {200, 202}
    assert len({r.json()["id"] for r in responses}) == 1

    keyed = png_bytes(size=(128, 128), seed=4343)
    responses = _concurrently(50, lambda i: stack.upload(keyed, **{"Idempotency-Key": "order-17"}))
    assert {r.status_code for r in responses} <= {200, 202}, [
        r.text for r in responses if r.status_code >= 300
    ]
    keyed_ids = {r.json()["id"] for r in responses}
    assert len(keyed_ids) == 1

    other = stack.upload(png_bytes(size=(128, 128), seed=4444), **{"Idempotency-Key": "order-17"})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"

    ids = [responses[0].json()["id"], *keyed_ids]
    assert_all_succeeded_once(stack, list(dict.fromkeys(ids)))
    assert stack.check_invariants()["counts"]["succeeded"] == 2  # one job, one inference, each


def test_overload_at_twice_capacity_only_sheds_cleanly(make_stack, shared_database, private_redis):
    # Capacity: batches of 4 at ~200 ms -> ~20 jobs/s. Offer ~40/s for 6 s against a queue cap of 30.
    stack = make_stack(
        shared_database.url,
        private_redis.url,
        CXRQ_BATCH_MAX_SIZE="4",
        CXRQ_BATCH_MAX_WAIT_MS="0",
        CXRQ_FAKE_BATCH_MS="200",
        CXRQ_FAKE_IMAGE_MS="0",
        CXRQ_MAX_QUEUE_DEPTH="30",
        CXRQ_UPLOAD_RATE="1200/min",
    )
    stack.start_web(threads=16, workers=2)
    stack.start_worker()
    statuses: Counter = Counter()
    accepted: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 6

    def client(k: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            r = stack.upload(png_bytes(size=(128, 128), seed=10_000 * (k + 1) + i))
            with lock:
                statuses[r.status_code] += 1
                if r.status_code in (503, 429):
                    assert int(r.headers["Retry-After"]) >= 1
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
            i += 1
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert set(statuses) <= {200, 202, 503, 429}, statuses
    assert statuses[503] > 0, statuses  # it did shed load
    assert_all_succeeded_once(stack, accepted, timeout=120)
