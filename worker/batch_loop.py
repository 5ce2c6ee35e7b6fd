"""The batch loop: drain the queue in micro-batches. Knows job states, not torch.

A wake-up runs `drain()`, which keeps claiming batches until the queue is empty:

  wait (<= batch_max_wait_ms) for batch_max_size jobs -> claim (SKIP LOCKED + one UPDATE)
  -> the handler preprocesses, infers, postprocesses -> store results (or fail the
  images that cannot be run, or send the batch back after an inference error)

Claim-ahead: once a batch's inputs are ready, the next batch is claimed and its
preprocessing starts in the pool while the model runs on this one, so the cores
stay busy while jobs are queued. A batch claimed ahead and not run (the worker
is stopping, an error escaped) is released: back to the queue, attempt undone.

Stopping (SIGTERM, worker/lifecycle.py) is checked between steps: the batch in
hand is finished, a batch claimed but not started is released, and drain returns.

Errors of the infrastructure (the database locked, restarting or unreachable; the broker
unreachable) are not the job's fault: each write is retried in place with backoff for a few
seconds, and a batch they still interrupt goes back to the queue with its attempt undone
(released, not retried), so they never count toward MAX_ATTEMPTS. Only errors of the job's own
(its image broke the model, a bug) spend attempts. What a client reads is a sentence for the
error code (backend/jobs/errors.py); the exception and its traceback are in this log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import redis.exceptions
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from kombu.exceptions import OperationalError as BrokerOperationalError

from backend.core.logging import log_context
from backend.jobs import selectors
from backend.jobs.errors import JOB_ERROR_MESSAGES
from backend.jobs.services import claims, leases
from backend.jobs.services.claims import ClaimedBatch
from worker import metrics
from worker.handler import HandledBatch, InferenceHandler
from worker.runtime.prep_pool import Prepared
from worker.runtime.tuned import EngineConfig

logger = logging.getLogger(__name__)

# The database locked (SQLite's single writer), restarting or unreachable; the broker unreachable.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    BrokerOperationalError,
    ConnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
# Retries in place of one write: 0.1 s, doubling to 2 s, for about this long in all (well under
# the lease, so the heartbeat keeps the batch while it waits).
INFRASTRUCTURE_RETRY_SECONDS = 8.0
# A batch given back after an infrastructure error is claimable again after this long.
INFRASTRUCTURE_RELEASE_DELAY_SECONDS = 1.0


def is_infrastructure_error(exc: BaseException) -> bool:
    return isinstance(exc, INFRASTRUCTURE_ERRORS)


def retrying(step: str, call):
    """`call()`, retried with backoff while it fails with an infrastructure error, for about
    INFRASTRUCTURE_RETRY_SECONDS; then the error is raised. Any other error is raised at once."""
    delay, deadline = 0.1, time.monotonic() + INFRASTRUCTURE_RETRY_SECONDS
    while True:
        try:
            return call()
        except INFRASTRUCTURE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "event=infrastructure_retry step=%s error=%s retry_in_s=%.1f", step, type(exc).__name__, delay
            )
            if not connection.in_atomic_block:  # (a test's transaction holds it)
                close_old_connections()  # a connection the error left unusable is replaced
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Throughput:
    """Images per second of this loop's recent batches, exponentially weighted (each batch's
    weight ALPHA): what the heartbeat reports, and so what the waiting-time estimate divides by.
    Before the first batch, the engine's benchmark figure (`seed`)."""

    ALPHA = 0.3

    def __init__(self, seed: float | None = None):
        self.value = seed

    def record(self, images: int, seconds: float) -> None:
        if images <= 0 or seconds <= 0:
            return
        rate = images / seconds
        self.value = rate if self.value is None else self.value + self.ALPHA * (rate - self.value)


class BatchLoop:
    def __init__(
        self,
        *,
        worker_id: str,
        model_version: str,
        handler: InferenceHandler,
        config: EngineConfig,
        stopping: threading.Event,
    ):
        self.worker_id, self.model_version = worker_id, model_version
        self.handler, self.config, self.stopping = handler, config, stopping
        self._held: dict[uuid.UUID, ClaimedBatch] = {}  # by claim token: what the heartbeat renews
        self._held_lock = threading.Lock()
        self._ahead: tuple[ClaimedBatch, Prepared] | None = None
        self._deadline = 0.0
        self.throughput = Throughput()

    def held_claims(self) -> list[uuid.UUID]:
        """Claim tokens of the batches this loop holds: in hand and claimed ahead."""
        with self._held_lock:
            return list(self._held)

    def drain(self) -> int:
        """Claim and run batches until no queued job is left, DRAIN_MAX_SECONDS have passed
        (then hand over to a fresh wake-up, so a task never runs long: the broker's
        visibility timeout is never reached), or the worker is stopping."""
        self._deadline = time.monotonic() + settings.DRAIN_MAX_SECONDS
        done = 0
        try:
            while not self.stopping.is_set():
                if self._ahead is not None:  # claimed ahead: run it, even a little past the deadline
                    (batch, prepared), self._ahead = self._ahead, None
                elif time.monotonic() > self._deadline:
                    leases.job_sweep_queued(older_than_seconds=0, limit=self.config.batch_max_size)
                    return done
                else:
                    try:
                        retrying("wait", self._wait_for_batch)
                        batch, prepared = retrying("claim", self._claim), None
                    except INFRASTRUCTURE_ERRORS as exc:
                        # Nothing was claimed (the claim's transaction rolled back): the jobs stay
                        # queued, and the sweeper wakes a worker for them again.
                        logger.warning("event=claim_failed error=%s (jobs stay queued)", type(exc).__name__)
                        return done
                    if not batch.jobs:
                        return done
                if self.stopping.is_set():  # claimed, not started: give it back
                    self._release(batch)
                    return done
                done += self._run(batch, prepared)
        finally:
            self._release_ahead()
        return done

    # --- claiming -----------------------------------------------------------------------
    def _claim(self) -> ClaimedBatch:
        batch = claims.job_claim_batch(
            worker_id=self.worker_id, model_version=self.model_version, max_size=self.config.batch_max_size
        )
        if batch.jobs:
            with self._held_lock:
                self._held[batch.claim_token] = batch
        return batch

    def _forget(self, batch: ClaimedBatch) -> None:
        with self._held_lock:
            self._held.pop(batch.claim_token, None)

    def _wait_for_batch(self) -> None:
        """Give a partial batch up to batch_max_wait_ms to fill."""
        wait_s = self.config.batch_max_wait_ms / 1000
        deadline = time.monotonic() + wait_s
        poll = max(wait_s / 4, 0.005)
        while time.monotonic() < deadline and not self.stopping.is_set():
            queued = selectors.queue_depth(
                model_version=self.model_version, at_most=self.config.batch_max_size
            )
            if queued == 0 or queued >= self.config.batch_max_size:
                return
            time.sleep(min(poll, max(deadline - time.monotonic(), 0)))

    def _claim_ahead(self) -> None:
        """Claim the next batch now and start preprocessing it beside this batch's inference."""
        if not self.handler.pool.overlaps or self.stopping.is_set() or time.monotonic() > self._deadline:
            return
        batch = self._claim()
        if batch.jobs:
            try:
                self._ahead = (batch, self.handler.start_preprocessing(batch))
            except Exception:
                self._release(batch)
                raise

    def _release(self, batch: ClaimedBatch, delay_seconds: float = 0.0) -> None:
        """Give back a batch this worker will not run (undoes the attempt). Forgotten first:
        if the release cannot be written (database gone), its leases must lapse, not be renewed."""
        self._forget(batch)
        try:
            retrying(
                "release",
                lambda: claims.job_release(
                    job_ids=batch.job_ids, claim_token=batch.claim_token, delay_seconds=delay_seconds
                ),
            )
        except Exception:
            logger.warning(
                "event=release_failed batch_id=%s (leases will lapse)", batch.batch_id, exc_info=True
            )
            return
        logger.info("event=batch_released batch_id=%s size=%d", batch.batch_id, len(batch.jobs))

    def _release_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            self._release(ahead[0])

    # --- running ------------------------------------------------------------------------
    def _run(self, batch: ClaimedBatch, prepared: Prepared | None) -> int:
        started = time.perf_counter()
        try:
            if prepared is None:
                prepared = self.handler.start_preprocessing(batch)
            handled = self.handler.handle(batch, prepared, before_inference=self._claim_ahead)
            self._settle(batch, handled)
            if handled.inference_error is None:
                self.throughput.record(len(batch.jobs), time.perf_counter() - started)
        except Exception as exc:
            self._give_back(batch, exc)
            if not is_infrastructure_error(exc):
                raise
            return 0
        finally:
            self._forget(batch)
        return len(batch.jobs)

    def _settle(self, batch: ClaimedBatch, handled: HandledBatch) -> None:
        """Move the batch's jobs on: rejected images fail alone; after an inference error the
        batch goes back (each job, having been attempted, is claimed alone next time, so only
        a poison image keeps failing, until MAX_ATTEMPTS); otherwise results are stored."""
        jobs = {job.id: job for job in batch.jobs}
        metrics.batch_ran(
            size=len(batch.jobs),
            timings=handled.timings,
            preprocess_ms=[o.timings["preprocess_ms"] for o in handled.outcomes],
        )
        for r in handled.rejected:
            # Lines about one job carry its upload's request id (Job.request_id) and its id.
            with log_context(request_id=jobs[r.job_id].request_id, job_id=r.job_id):
                if retrying(
                    "fail",
                    lambda r=r: claims.job_fail(
                        job_id=r.job_id, claim_token=batch.claim_token, code=r.code, message=r.message
                    ),
                ):
                    metrics.job_ended(jobs[r.job_id], status="failed")
                logger.warning(
                    "event=job_failed job_id=%s batch_id=%s code=%s", r.job_id, batch.batch_id, r.code
                )
        if handled.inference_error is not None:
            exc = handled.inference_error
            logger.error(
                "event=inference_failed batch_id=%s size=%d error=%r",
                batch.batch_id,
                len(handled.inferred_job_ids),
                exc,
                exc_info=exc,
            )
            retrying(
                "retry_later",
                lambda: claims.job_retry_later(
                    job_ids=handled.inferred_job_ids,
                    claim_token=batch.claim_token,
                    code="inference_failed",
                    message=JOB_ERROR_MESSAGES["inference_failed"],
                ),
            )
            metrics.jobs_retried(len(handled.inferred_job_ids))
            return
        if not handled.outcomes:
            return
        started = time.perf_counter()
        stored = retrying("store", lambda: claims.job_store_results(batch=batch, outcomes=handled.outcomes))
        metrics.stored(time.perf_counter() - started)
        t = handled.timings
        logger.info(
            "event=batch_done batch_id=%s size=%d stored=%d preprocess_ms=%.1f inference_ms=%.1f "
            "postprocess_ms=%.1f store_ms=%.1f job_ids=%s",
            batch.batch_id,
            len(batch.jobs),
            len(stored),
            t.get("preprocess_ms", 0.0),
            t.get("inference_ms", 0.0),
            t.get("postprocess_ms", 0.0),
            (time.perf_counter() - started) * 1000,
            ",".join(str(j) for j in batch.job_ids),
        )
        for job_id in stored:
            with log_context(request_id=jobs[job_id].request_id, job_id=job_id):
                metrics.job_ended(jobs[job_id], status="succeeded")
                logger.info("event=job_succeeded job_id=%s batch_id=%s", job_id, batch.batch_id)

    def _give_back(self, batch: ClaimedBatch, exc: Exception) -> None:
        """An error escaped the batch. The infrastructure's (the database still locked or gone
        after the retries): the batch is released, its attempt undone. Any other (a bug): its
        jobs are requeued with backoff, spending the attempt. When even that cannot be written,
        their leases lapse and the reaper requeues them; the worker never keeps them."""
        job_ids = ",".join(str(j) for j in batch.job_ids)
        if is_infrastructure_error(exc):
            logger.warning(
                "event=batch_released_infrastructure batch_id=%s error=%s job_ids=%s detail=%r",
                batch.batch_id,
                type(exc).__name__,
                job_ids,
                str(exc)[:300],
            )
            self._release(batch, delay_seconds=INFRASTRUCTURE_RELEASE_DELAY_SECONDS)
            return
        logger.exception("event=batch_error batch_id=%s error=%r job_ids=%s", batch.batch_id, exc, job_ids)
        try:
            retrying(
                "retry_later",
                lambda: claims.job_retry_later(
                    job_ids=batch.job_ids,
                    claim_token=batch.claim_token,
                    code="worker_error",
                    message=JOB_ERROR_MESSAGES["worker_error"],
                ),
            )
        except Exception:  # noqa: BLE001 - database gone too: the lease lapses and the reaper requeues
            logger.warning("event=give_back_failed batch_id=%s (leases will lapse)", batch.batch_id)
