"""The Celery task and the worker's lifecycle hooks. torch is imported lazily, in the pool child only."""

from __future__ import annotations

import logging
import signal

import psutil
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutting_down
from django.conf import settings

from backend.celery_app import app
from backend.jobs.dispatch import PROCESS_JOBS_TASK

logger = logging.getLogger(__name__)


# A drain runs batches for about DRAIN_MAX_SECONDS, then hands over to a new wake-up.
# The hard limit kills a child stuck in one batch (a hanging image): its leases then
# lapse and the reaper requeues its jobs, each alone, until MAX_ATTEMPTS.
@app.task(
    name=PROCESS_JOBS_TASK,
    ignore_result=True,
    soft_time_limit=settings.DRAIN_MAX_SECONDS + settings.BATCH_TIME_LIMIT_SECONDS,
    time_limit=settings.DRAIN_MAX_SECONDS + settings.BATCH_TIME_LIMIT_SECONDS + 10,
)
def process_jobs(job_ids: list[str]) -> int:
    """Wake-up call: drain the queue in micro-batches. The ids are a hint for logs only;
    the claim query decides what this worker runs, so duplicates and stale ids are harmless."""
    from worker.lifecycle import current_process

    return current_process().drain(hint=job_ids)


@worker_init.connect
def _first_start_tune(**_kwargs) -> None:
    """In the main process, before the pool starts: on a CPU with no tuned entry, the bounded
    first-start tune (worker/runtime/autotune.py). A child process runs it, so torch stays out of
    the process the pool forks from."""
    from worker.runtime import autotune

    autotune.first_start()


@worker_process_init.connect
def _load_model(**_kwargs) -> None:
    from worker.lifecycle import current_process

    current_process().start()


@worker_process_shutdown.connect
def _sign_off(**_kwargs) -> None:
    from worker.lifecycle import stop_current_process

    stop_current_process()


@worker_shutting_down.connect
def _stop_children(sig: str = "", how: str = "", **_kwargs) -> None:
    """In the main process, at the start of a warm shutdown: tell each pool child to stop
    after its batch in hand. `docker stop` and systemd signal the main process only, and
    warm shutdown otherwise waits for a whole drain (DRAIN_MAX_SECONDS and more)."""
    if how != "Warm":
        return
    signalled = 0
    for child in psutil.Process().children():
        try:
            child.send_signal(signal.SIGTERM)
            signalled += 1
        except psutil.Error:
            continue
    logger.info("event=worker_shutting_down sig=%s children_signalled=%d", sig, signalled)
