"""Long-poll on the event loop: `GET /api/v1/jobs/{id}?wait=N` without holding a thread.

Django answers every pass (authentication, scoping, serialisation, ETag stay in the view).
When the job has not ended (or, with If-None-Match, has not changed) and the client may
still wait, the view marks its answer with the internal header X-Cxrq-Wait; the edge keeps
that answer back, waits on the event loop for the job's end (backend/jobs/events.py: one
Redis subscription per process; every second without Redis), then asks Django again with
what is left of the wait. A waiting client costs a coroutine and a dictionary entry; a
Django thread only for the few milliseconds of each pass. An idle waiter costs nothing more:
announcements are not lost while the subscription holds, and whenever it is (re)made every
waiter asks again once, for what it may have missed while there was none; RECHECK_SECONDS is
only a backstop (at 5 s, 1,000 idle waiters cost two-thirds of a core in passes:
docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.conf import settings

logger = logging.getLogger(__name__)

# Set by the view (backend/jobs/api.py) on an answer the edge may hold back; never sent on.
WAIT_HEADER = "X-Cxrq-Wait"
_WAIT_HEADER_KEY = WAIT_HEADER.lower().encode()
RECHECK_SECONDS = 30.0
POLL_SECONDS_WITHOUT_EVENTS = 1.0


def wants_wait(scope: dict[str, Any]) -> bool:
    return scope["method"] in ("GET", "HEAD") and b"wait=" in scope.get("query_string", b"")


class JobEndedListener:
    """One Redis subscription per web process; waiters register by job id."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.task: asyncio.Task | None = None

    def register(self, job_id: str, event: asyncio.Event | None = None) -> asyncio.Event:
        event = event or asyncio.Event()
        self.waiters.setdefault(job_id, set()).add(event)
        if settings.JOB_EVENTS_URL and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self._listen(settings.JOB_EVENTS_URL))
        return event

    def unregister(self, job_id: str, event: asyncio.Event) -> None:
        events = self.waiters.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self.waiters[job_id]

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        if not settings.JOB_EVENTS_URL:
            timeout = min(timeout, POLL_SECONDS_WITHOUT_EVENTS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(timeout, 0.0))

    async def _listen(self, url: str) -> None:
        import redis.asyncio as aioredis

        from backend.jobs.events import CHANNEL

        while True:
            try:
                # Named, so an operator's CLIENT LIST shows which web process holds it.
                client = aioredis.Redis.from_url(url, client_name=f"cxrq-job-events-{os.getpid()}")
                pubsub = client.pubsub()
                await pubsub.subscribe(CHANNEL)
                # Subscribed (again): whatever ended while there was no subscription was not
                # heard, so every waiter asks once more.
                for events in list(self.waiters.values()):
                    for event in events:
                        event.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        for event in self.waiters.get(message["data"].decode(), ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event=job_events_listener_lost", exc_info=True)
                await asyncio.sleep(1.0)


LISTENER = JobEndedListener()


async def respond(app, scope: dict[str, Any], receive, send) -> None:
    """Run `app` for a ?wait= request, passing again as the job ends, until it may not wait."""
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    try:
        asked = max(0.0, min(float(query.get("wait", "0")), settings.LONG_POLL_MAX_SECONDS))
    except ValueError:
        asked = 0.0  # the view refuses it with 400
    deadline = time.monotonic() + asked
    event = asyncio.Event()
    # The job in the path is listened for before the first pass (no end slips between the pass
    # and the listening); the jobs the view names in its header (a batch's) from its answer on.
    path_id = _job_id(scope["path"])
    listening: set[str] = set()
    if path_id:
        LISTENER.register(path_id, event)
        listening.add(path_id)
    try:
        while True:
            start, body = await _capture(app, scope, receive)
            headers = start.get("headers", [])
            named = _named_jobs(headers)
            remaining = deadline - time.monotonic()
            if named is None or remaining <= 0.05 or not (named or listening):
                start = start | {"headers": [(k, v) for k, v in headers if k.lower() != _WAIT_HEADER_KEY]}
                for message in (start, *body):
                    await send(message)
                return
            new = named - listening
            for job_id in new:
                LISTENER.register(job_id, event)
            listening |= new
            if not new:  # nothing new to listen for: wait for an end (or the recheck)
                await LISTENER.wait(event, min(remaining, RECHECK_SECONDS))
            # else: ask again at once, so that an end between that pass and the listening counts.
            event.clear()
            left = deadline - time.monotonic()
            # What is left, rounded up; 0 (answer as it stands) once it has run out.
            seconds = math.ceil(left) if left > 0.05 else 0
            scope = scope | {"query_string": urlencode(query | {"wait": str(seconds)}).encode()}
            receive = _no_body
    finally:
        for job_id in listening:
            LISTENER.unregister(job_id, event)


def _named_jobs(headers: list[tuple[bytes, bytes]]) -> set[str] | None:
    """The job ids in the view's wait header (`<id>[,<id>...] <seconds>`), or None: answer now."""
    for key, value in headers:
        if key.lower() == _WAIT_HEADER_KEY:
            ids = value.decode("latin-1").split(" ", 1)[0]
            return {job_id for job_id in ids.split(",") if job_id}
    return None


def _job_id(path: str) -> str | None:
    parts = path.rstrip("/").split("/")
    try:
        return str(uuid.UUID(parts[-1]))
    except ValueError:
        return None


async def _capture(app, scope, receive) -> tuple[dict, list[dict]]:
    start: dict = {}
    body: list[dict] = []

    async def send(message: dict) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        else:
            body.append(message)

    await app(scope, receive, send)
    return start, body


async def _no_body() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}
