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
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from django.conf import settings

from backend.core.logging import log_context
from backend.jobs import selectors
from backend.jobs.services import claims, leases
from backend.jobs.services.claims import ClaimedBatch
from worker import metrics
from worker.handler import HandledBatch, InferenceHandler
from worker.runtime.prep_pool import Prepared
from worker.runtime.tuned import EngineConfig

logger = logging.getLogger(__name__)


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
                    self._wait_for_batch()
                    batch, prepared = self._claim(), None
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

    def _release(self, batch: ClaimedBatch) -> None:
        """Give back a batch this worker will not run (undoes the attempt). Forgotten first:
        if the release cannot be written (database gone), its leases must lapse, not be renewed."""
        self._forget(batch)
        try:
            claims.job_release(job_ids=batch.job_ids, claim_token=batch.claim_token)
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
        try:
            if prepared is None:
                prepared = self.handler.start_preprocessing(batch)
            handled = self.handler.handle(batch, prepared, before_inference=self._claim_ahead)
            self._settle(batch, handled)
        except Exception as exc:
            self._give_back(batch, exc)
            raise
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
                if claims.job_fail(
                    job_id=r.job_id, claim_token=batch.claim_token, code=r.code, message=r.message
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
            claims.job_retry_later(
                job_ids=handled.inferred_job_ids,
                claim_token=batch.claim_token,
                code="inference_failed",
                message=f"{type(exc).__name__}: {exc}"[:500],
            )
            metrics.jobs_retried(len(handled.inferred_job_ids))
            return
        if not handled.outcomes:
            return
        started = time.perf_counter()
        stored = claims.job_store_results(batch=batch, outcomes=handled.outcomes)
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
        """An error escaped the batch (database gone mid-store, a bug): requeue its jobs
        with backoff, or leave them to lapse when even that fails; never keep them."""
        logger.exception("event=batch_error batch_id=%s error=%r", batch.batch_id, exc)
        try:
            claims.job_retry_later(
                job_ids=batch.job_ids,
                claim_token=batch.claim_token,
                code="worker_error",
                message=f"{type(exc).__name__}: {exc}"[:500],
            )
        except Exception:  # noqa: BLE001 - database gone too: the lease lapses and the reaper requeues
            logger.warning("event=give_back_failed batch_id=%s (leases will lapse)", batch.batch_id)
