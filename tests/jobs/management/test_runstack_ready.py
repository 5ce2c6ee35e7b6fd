"""runstack's ready line: said once, only for a worker that reported in after the stack started."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backend.jobs.management.commands.runstack import ReadyLine
from backend.jobs.models import WorkerHeartbeat
from backend.jobs.services import workers

pytestmark = pytest.mark.django_db


def _beat(worker_id: str, weights: str) -> None:
    workers.worker_heartbeat(
        worker_id=worker_id, hostname="h", pid=1, model_version="m", info={"weights": weights}
    )


def test_the_ready_line_waits_for_a_worker_of_this_stack_and_is_said_once():
    said: list[str] = []
    since = timezone.now()
    _beat("left-over", "official")  # a heartbeat from before this stack started
    WorkerHeartbeat.objects.filter(worker_id="left-over").update(started_at=since - timedelta(minutes=5))
    ready = ReadyLine(base="http://127.0.0.1:8123", since=since, write=said.append, repeat=["  API key  : x"])
    ready.POLL_SECONDS = 0
    ready.check()
    assert said == []
    _beat("ours", "untrained")
    ready.check()
    ready.check()
    assert said == ["cxrq is ready: http://127.0.0.1:8123/ (worker up, weights: untrained)\n  API key  : x\n"]
