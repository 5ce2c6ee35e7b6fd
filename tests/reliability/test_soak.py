"""Soak: `make run` (manage.py runstack: web, worker, dispatcher, DICOM receiver) under mixed
concurrent traffic from a few client threads, on the embedded default (SQLite + the filesystem
broker) and on PostgreSQL + Redis. No component dies, no request gets a 5xx or no answer, no job
is failed by the infrastructure, every accepted job ends; then one SIGTERM to the process group
leaves nothing of it within 15 s, however loaded.

CXRQ_SOAK_SECONDS sets the traffic's length (default 60; each test stays within 3 minutes on two
loaded cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.reliability.harness import MixedTraffic, embedded_default, free_port, wait_for

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("CXRQ_SOAK_SECONDS", "60"))
# What `make run`'s process group gets, from the SIGTERM, to be gone entirely.
STOP_SECONDS = 15


def _group_alive(pgid: int) -> bool:
    return bool(subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True).stdout.strip())


def soak(stack) -> None:
    run = stack.start_runstack(dicom_port=free_port())
    traffic = MixedTraffic(stack, threads=4, seconds=SOAK_SECONDS).run()
    print("soak traffic:", traffic.summary())

    assert not traffic.problems, traffic.problems[:10]
    assert len(traffic.accepted) > 0
    # Every accepted job ends, and none failed: the fake model fails no image of these.
    ended = stack.wait_terminal(sorted(set(traffic.accepted)), timeout=60)
    statuses = Counter(job["status"] for job in ended.values())
    print("soak jobs:", dict(statuses))
    assert set(statuses) <= {"succeeded", "cancelled"}, {
        i: j["error"] for i, j in ended.items() if j["status"] == "failed"
    }
    log = stack.all_logs()
    assert "event=component_died" not in log
    assert "Unrecoverable error" not in log
    assert stack.health()["reasons"] == []

    os.killpg(run.pid, signal.SIGTERM)  # Ctrl-C / systemd / docker stop of `make run`
    started = time.monotonic()
    # runstack is reaped first (poll): until then it is a zombie that pgrep still lists.
    wait_for(
        lambda: run.poll() is not None and not _group_alive(run.pid),
        STOP_SECONDS,
        interval=0.2,
        what="make run's group to exit",
    )
    print(f"soak stop: group gone in {time.monotonic() - started:.1f} s")


def test_soak_embedded_default(make_stack, tmp_path):
    embedded = embedded_default(tmp_path)
    stack = make_stack(embedded.pop("database_url"), embedded.pop("broker_url"), **embedded)
    soak(stack)


def test_soak_postgresql_and_redis(make_stack, shared_database, private_redis):
    soak(make_stack(shared_database.url, private_redis.url))


def test_a_component_that_dies_is_restarted_and_health_says_so_meanwhile(make_stack, tmp_path):
    """The worker is killed: the web, the dispatcher and the receiver keep serving, health names the
    worker as down until runstack has restarted it, and the restarted worker serves jobs."""
    embedded = embedded_default(tmp_path)
    stack = make_stack(
        embedded.pop("database_url"),
        embedded.pop("broker_url"),
        # Long enough to look at health while the worker is down.
        CXRQ_RUNSTACK_RESTART_DELAY_SECONDS="8",
        **embedded,
    )
    run = stack.start_runstack()
    state = stack.health()["stack"]
    assert state["components"] == {"web": "up", "worker": "up", "dispatcher": "up"}

    import psutil

    # `python -m worker` became the Celery worker's main process (exec).
    worker = next(p for p in psutil.Process(run.pid).children() if "worker.celery_app" in p.cmdline())
    worker.kill()
    wait_for(lambda: "worker_process_down" in stack.health()["reasons"], 30, what="health to say so")
    assert stack.health()["stack"]["components"]["web"] == "up"
    wait_for(lambda: stack.all_logs().count("event=worker_started") >= 2, 90, what="the worker restarted")
    log = stack.all_logs()
    assert "event=component_died component=worker returncode=-9" in log
    assert "event=component_restarted component=worker restarts=1" in log
    assert "worker_process_down" not in stack.health()["reasons"]

    from tests.factories import png_bytes

    response = stack.upload(png_bytes(seed=3))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert stack.wait_terminal([job_id], timeout=60)[job_id]["status"] == "succeeded"
    assert run.poll() is None
