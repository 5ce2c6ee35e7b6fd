"""Wake workers after the job row is committed. The message carries ids only.

A lost wake-up loses no job: the job is in the database, and the workers'
sweeper re-sends wake-ups for jobs queued too long. So when the broker is
down, uploads are still accepted: the send fails fast, a circuit breaker
skips the broker for a few seconds, and the job waits in the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from uuid import UUID

from django.db import transaction

logger = logging.getLogger(__name__)

# The one name of the worker's task (worker/tasks.py registers it under this name).
PROCESS_JOBS_TASK = "cxrq.process_jobs"
BROKER_RETRY_SECONDS = 5.0

_lock = threading.Lock()
_broker_down_until = 0.0


def broker_recently_down() -> bool:
    return time.monotonic() < _broker_down_until


def _send(job_ids: list[str]) -> bool:
    global _broker_down_until
    if broker_recently_down():
        logger.info("event=wakeup_skipped reason=broker_down job_ids=%s", ",".join(job_ids))
        return False
    from backend.celery_app import app

    try:
        app.send_task(PROCESS_JOBS_TASK, args=[job_ids], retry=False, queue=app.conf.task_default_queue)
    except Exception as exc:  # noqa: BLE001 - broker down: the job stays QUEUED in the database
        with _lock:
            _broker_down_until = time.monotonic() + BROKER_RETRY_SECONDS
        logger.warning("event=wakeup_failed job_ids=%s error=%r", ",".join(job_ids), exc)
        return False
    return True


def wake_workers(job_ids: Iterable[UUID | str]) -> None:
    ids = [str(i) for i in job_ids]
    if ids:
        transaction.on_commit(lambda: _send(ids))
