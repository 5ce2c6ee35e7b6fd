"""How many report requests (sr.dcm, fhir) one client may have in progress in one web process.

A report that has not been built yet takes a few hundred milliseconds of CPU on a request thread
(store.py builds it once, then serves the sealed copy). Without a bound, one client sending many
at once holds every one of the process's CXRQ_WEB_THREADS threads, and health and every other
client wait behind it. Past CXRQ_REPORT_CLIENT_CONCURRENCY the request is answered at once with
429 `too_many_report_requests` and Retry-After; other clients keep their threads.

The count is per process (threads share it under a lock): nothing to clean up when a process
dies, and no round trip to Redis on a request that is often answered from the store in a few
milliseconds. A client can therefore have that many in progress in each web process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from backend.interop import errors

RETRY_AFTER_SECONDS = 1

_lock = threading.Lock()
_in_progress: Counter[str] = Counter()


@contextmanager
def client_slot(client_id: object) -> Iterator[None]:
    """Hold one of the client's report slots for the block; TooManyReportRequests if none is free."""
    limit = settings.REPORT_CLIENT_CONCURRENCY
    key = str(client_id)
    with _lock:
        if limit and _in_progress[key] >= limit:
            raise errors.TooManyReportRequests(
                details={"max_in_progress": limit}, retry_after=RETRY_AFTER_SECONDS
            )
        _in_progress[key] += 1
    try:
        yield
    finally:
        with _lock:
            _in_progress[key] -= 1
            if _in_progress[key] <= 0:
                del _in_progress[key]


def in_progress(client_id: object) -> int:
    with _lock:
        return _in_progress[str(client_id)]
