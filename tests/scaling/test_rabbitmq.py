"""RabbitMQ as the broker (docs/scaling.md, broker choice): the real stack (web, a Celery worker on
the fake model, the webhook dispatcher) on a private virtual host of the shared RabbitMQ, reached
through a relay the test can cut, so the shared server is never stopped.

No Redis at all: rate limits and long-poll waiters fall back to the database, as documented.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest
import requests

from tests.factories import png_bytes
from tests.reliability.harness import (
    STACK_CLIENT,
    RabbitVhost,
    SharedPostgresDatabase,
    Stack,
    TcpRelay,
    wait_for,
)
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.slow

# Without Redis: the database counts rate limits, waiters look again every second.
NO_REDIS = {"CXRQ_CACHE_URL": "", "CXRQ_RATE_LIMIT_URL": "", "CXRQ_JOB_EVENTS_URL": ""}


@pytest.fixture
def vhost():
    if not RabbitVhost.available():
        pytest.skip(RabbitVhost.UNREACHABLE)
    vhost = RabbitVhost()
    vhost.create()
    yield vhost
    vhost.delete()
    assert not vhost.exists()


@pytest.fixture
def relay(vhost):
    relay = TcpRelay(RabbitVhost.PORT, RabbitVhost.HOST)
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture
def database():
    db = SharedPostgresDatabase()
    try:
        db.create()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"needs PostgreSQL on 127.0.0.1:5432 ({exc})")
    yield db
    db.drop()


@pytest.fixture
def stack(tmp_path, database, vhost, relay):
    stack = Stack(
        tmp_path / "stack",
        database.url,
        vhost.url(relay.port),
        CXRQ_PUBLIC_URL="http://testserver",
        CXRQ_WEBHOOK_RETRY_BASE_SECONDS="2",
        **NO_REDIS,
    )
    stack.migrate()
    stack.create_client(STACK_CLIENT)
    yield stack
    stack.stop_all()


def upload(stack: Stack, seed: int, **fields: str) -> tuple[str, float]:
    started = time.monotonic()
    r = requests.post(
        f"{stack.web_url}/api/v1/jobs",
        files={"image": ("x.png", png_bytes(size=(128, 128), seed=seed))},
        data=fields,
        headers=stack.headers(),
        timeout=30,
    )
    assert r.status_code == 202, r.text
    return r.json()["id"], time.monotonic() - started


def start_dispatcher(stack: Stack):
    from backend.webhooks.management.commands.run_dispatcher import dispatcher_argv

    proc = stack.spawn("dispatcher", dispatcher_argv(beat=False))
    wait_for(lambda: "ready" in stack.log_of(proc) or proc.poll() is not None, 60, what="dispatcher")
    assert proc.poll() is None, stack.log_of(proc)[-3000:]
    return proc


def test_rabbitmq_quorum_queues_carry_jobs_and_an_outage_loses_none(stack, vhost, relay):
    started = time.monotonic()
    receiver = Receiver(script=[500]).start()  # the first delivery fails: a delayed retry follows
    try:
        stack.start_web()
        stack.start_worker(CXRQ_FAKE_BATCH_MS="20")
        start_dispatcher(stack)

        # Uploads become results; a waiter on the database fallback sees the end.
        hooked, _ = upload(stack, 0, callback_url=receiver.url)
        ids = [hooked] + [upload(stack, seed)[0] for seed in range(1, 6)]
        waited = requests.get(
            f"{stack.web_url}/api/v1/jobs/{ids[-1]}", params={"wait": 20}, headers=stack.headers(), timeout=30
        ).json()
        assert waited["status"] == "succeeded", waited
        done = stack.wait_terminal(ids, timeout=30)
        assert Counter(j["status"] for j in done.values()) == {"succeeded": len(ids)}

        # The worker's and the dispatcher's queues are quorum queues.
        queues = vhost.queue_types()
        webhook_queue = stack.env["CXRQ_WEBHOOK_QUEUE"]
        assert queues[stack.env["CXRQ_QUEUE"]] == "quorum", queues
        assert queues[webhook_queue] == "quorum", queues
        # Consumers (worker, dispatcher) heartbeat, so a silently dead link is noticed in seconds.
        timeouts = vhost.ctl("list_connections", "vhost", "timeout").split()
        assert timeouts.count("10") >= 2, timeouts

        # The webhook's retry waited in the broker (native delayed delivery), not in the dispatcher.
        first, second = receiver.wait_for(2, timeout=30)
        assert second.at - first.at >= 1.5
        assert "celery_delayed_0" in queues

        # The broker answers nothing (hung, or the link dropped): uploads are still accepted. The
        # first waits out the socket timeouts (the confirm, then closing the channel and the
        # connection: 3 x 2 s, never the client's 30 s); the circuit breaker spares the next ones.
        relay.blackhole()
        hung = [upload(stack, seed) for seed in range(100, 103)]
        # The broker's port is closed (a stopped broker): the same, and the health says so.
        relay.cut()
        refused = [upload(stack, seed) for seed in range(200, 203)]
        health = requests.get(
            f"{stack.web_url}/api/v1/health", headers=stack.headers(operator=True), timeout=10
        )
        assert "broker_unavailable" in health.json()["reasons"], health.json()
        seconds = [round(s, 3) for _, s in hung + refused]
        assert seconds[0] < 10.0 and max(seconds[1:]) < 3.0, seconds

        # Nothing ran meanwhile: no worker heard of these jobs, they wait in the database.
        later = [i for i, _ in hung + refused]
        assert {stack.job(i)["status"] for i in later} == {"queued"}

        # Back: the wake-ups that were lost are sent again from the database; nothing is lost.
        relay.restore()
        restored = time.monotonic()
        done = stack.wait_terminal(later, timeout=30)
        recovered = time.monotonic() - restored
        assert Counter(j["status"] for j in done.values()) == {"succeeded": len(later)}
        report = stack.check_invariants()
        assert report["counts"]["results"] == report["counts"]["succeeded"] == len(ids) + len(later)
        print(
            f"upload seconds, broker hung then refusing: {seconds}; all done {recovered:.1f} s after it "
            f"came back; {time.monotonic() - started:.0f} s in all",
            file=sys.stderr,
        )
    finally:
        receiver.stop()
