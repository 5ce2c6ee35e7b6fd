"""Job-ended announcements, so that a client waiting on a job (`GET /jobs/{id}?wait=N`) is
answered the moment it ends, without a loop of queries.

Every move to an end (services/transitions.to_terminal) announces the job ids after its
transaction commits, on the Redis channel `cxrq:job-ended` (JOB_EVENTS_URL: by default the
broker's Redis). Each web process listens on one connection, from its event loop
(backend/edge/waiting.py). Without Redis (the embedded default) nothing is published and
waiters look again every second instead: documented, and enough for one developer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

CHANNEL = "cxrq:job-ended"


@lru_cache(maxsize=2)
def _client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)


def announce_ended(job_ids: Iterable[object]) -> None:
    """Publish these job ids once the current transaction commits (at once outside one)."""
    ids = [str(i) for i in job_ids]
    url = settings.JOB_EVENTS_URL
    if not ids or not url:
        return

    def publish() -> None:
        try:
            pipe = _client(url).pipeline(transaction=False)
            for job_id in ids:
                pipe.publish(CHANNEL, job_id)
            pipe.execute()
        except Exception:
            # Waiters look again on their own within seconds: never fail a move for this.
            logger.warning("event=job_event_publish_failed jobs=%d", len(ids), exc_info=True)

    transaction.on_commit(publish)
