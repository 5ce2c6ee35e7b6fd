"""The job-ended listener of each web process (backend/edge/waiting.py): an announcement wakes the
waiters of that job only, and a lost subscription, once made again, wakes every waiter to ask once
more (what ended in between was not heard)."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis
from django.conf import settings

from backend.edge.waiting import JobEndedListener
from backend.jobs.events import CHANNEL


def _redis_url() -> str:
    if not settings.JOB_EVENTS_URL.startswith("redis://"):
        pytest.skip("Redis is not reachable in this run (start redis-server on 127.0.0.1:6379)")
    return settings.JOB_EVENTS_URL


async def _until(event: asyncio.Event, timeout: float = 5.0) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False


def test_an_announcement_wakes_its_waiters_and_a_lost_subscription_wakes_all():
    url = _redis_url()
    admin = redis.Redis.from_url(url)

    async def scenario() -> None:
        listener = JobEndedListener()
        mine, other = listener.register("job-a"), listener.register("job-b")
        # The subscription is made in the background: it wakes everyone once when it is.
        assert await _until(mine) and await _until(other)
        mine.clear()
        other.clear()
        admin.publish(CHANNEL, "job-a")
        assert await _until(mine)
        assert not other.is_set()
        mine.clear()
        # Cut the listener's connection: ours only, found by its name.
        (ours,) = [c for c in admin.client_list() if c.get("name") == f"cxrq-job-events-{os.getpid()}"]
        admin.client_kill_filter(_id=ours["id"])
        assert await _until(other, timeout=10), "a new subscription must wake every waiter"
        assert mine.is_set()
        listener.task.cancel()

    asyncio.run(scenario())
