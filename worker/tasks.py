"""Celery tasks and worker lifecycle hooks. torch is imported lazily, in the worker child only."""

from __future__ import annotations

import logging

from celery.signals import worker_process_init, worker_process_shutdown
from django.conf import settings

from worker.celery_app import app

logger = logging.getLogger(__name__)


# A drain runs batches for about DRAIN_MAX_SECONDS, then hands over to a new wake-up.
# The hard limit kills a child stuck in one batch (a hanging image): its leases then
# lapse and the reaper requeues its jobs, each alone, until MAX_ATTEMPTS.
@app.task(
    name="cxrq.process_jobs",
    ignore_result=True,
    soft_time_limit=settings.DRAIN_MAX_SECONDS + settings.BATCH_TIME_LIMIT_SECONDS,
    time_limit=settings.DRAIN_MAX_SECONDS + settings.BATCH_TIME_LIMIT_SECONDS + 10,
)
def process_jobs(job_ids: list[str]) -> int:
    """Wake-up call: drain the queue in micro-batches. The ids are a hint for logs only;
    the claim query decides what this worker runs, so duplicates and stale ids are harmless."""
    from worker.batching import get_processor

    return get_processor().drain(hint=job_ids)


@worker_process_init.connect
def _load_model(**_kwargs) -> None:
    from worker.batching import get_processor

    get_processor().start()


@worker_process_shutdown.connect
def _sign_off(**_kwargs) -> None:
    from worker.batching import stop_processor

    stop_processor()
