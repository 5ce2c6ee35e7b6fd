"""Wake workers after the job row is committed. The message carries ids only.

A lost wake-up loses no job: the job is in the database, and any later
wake-up (or a worker's own drain loop) claims it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from uuid import UUID

from django.db import transaction

logger = logging.getLogger(__name__)

PROCESS_TASK = "cxrq.process_jobs"


def _send(job_ids: list[str]) -> None:
    from worker.celery_app import app

    try:
        app.send_task(PROCESS_TASK, args=[job_ids], retry=False, queue=app.conf.task_default_queue)
    except Exception as exc:  # noqa: BLE001 - broker down: the job stays QUEUED in the database
        logger.warning("event=wakeup_failed job_ids=%s error=%r", ",".join(job_ids), exc)


def wake_workers(job_ids: Iterable[UUID | str]) -> None:
    ids = [str(i) for i in job_ids]
    if ids:
        transaction.on_commit(lambda: _send(ids))
