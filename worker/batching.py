"""Micro-batching: claim queued jobs from the database, run them, store results.

One Processor per worker process. A wake-up call runs `drain()`, which keeps
claiming batches until the queue is empty:

  wait (<= BATCH_MAX_WAIT_MS) for BATCH_MAX_SIZE jobs -> claim (SKIP LOCKED + one UPDATE)
  -> preprocess each job (a bad image fails alone) -> one forward pass
  -> postprocess -> store results + guarded SUCCEEDED update

Preprocessing runs in a pool of CXRQ_PREPROCESS_WORKERS threads. Once a batch
is preprocessed, the next one is claimed at once (no wait) and preprocessed
in the pool while the model runs on the first, so the cores stay busy while
jobs are queued. A batch claimed ahead is given back (services.job_release)
if the worker stops before running it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection

from backend.jobs import services
from backend.jobs.services import ClaimedBatch, InferenceOutcome
from worker.runtime.prep_pool import Prepared, PreprocessPool

logger = logging.getLogger(__name__)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class Processor:
    def __init__(self) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.runtime = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.current_batch: ClaimedBatch | None = None  # whose leases the heartbeat renews
        self._shutdown = threading.Event()
        self._pool: PreprocessPool | None = None
        self._ahead: tuple[ClaimedBatch, Prepared] | None = None  # claimed, preprocessing
        self._drain_deadline = 0.0

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Load and warm the model, then report in. Idempotent."""
        with self._lock:
            if self.runtime is None:
                if settings.MODEL_FAKE:
                    from worker.runtime.fake import load_fake_runtime as load_runtime
                else:
                    from worker.runtime.model import load_runtime

                self.runtime = load_runtime()
                logger.info("event=model_loaded worker_id=%s info=%s", self.worker_id, self.info())
        self._beat()
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, name="cxrq-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _install_sigterm_handler(self) -> None:
        # Installed here, not at process init: billiard resets the child's signal
        # handlers after Celery's initializer has run.
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and signal.getsignal(signal.SIGTERM) != self.on_sigterm:
            signal.signal(signal.SIGTERM, self.on_sigterm)

    def on_sigterm(self, signum, frame) -> None:
        """SIGTERM in the worker child (systemd, or `kill` of the process group): finish the
        batch in hand, then exit; exit at once when idle. The parent's warm shutdown, or a
        fresh child, carries on; nothing claimed is left behind."""
        self._shutdown.set()
        if self.current_batch is None:
            self._exit()

    def _exit(self) -> None:
        self.stop()
        logger.info("event=worker_exit worker_id=%s reason=sigterm", self.worker_id)
        os._exit(0)

    def stop(self) -> None:
        self._stop.set()
        try:
            services.worker_signoff(worker_id=self.worker_id)
        except Exception:
            logger.exception("event=signoff_failed worker_id=%s", self.worker_id)

    def info(self) -> dict[str, Any]:
        rt = self.runtime
        if rt is None:
            return {}
        prov = rt.provenance()
        return {
            "backend": prov["backend"],
            "precision": prov["precision"],
            # Fast mode asked for but refused by its guard shows here, and so in health.
            "precision_requested": prov.get("precision_requested", prov["precision"]),
            "fast_guard": prov.get("fast_guard"),
            "weights": prov["weights"],
            "threads": rt.extra.get("threads"),
            "load_ms": round(rt.load_ms),
            "batch_max_size": settings.BATCH_MAX_SIZE,
            "batch_max_wait_ms": settings.BATCH_MAX_WAIT_MS,
        }

    def _beat(self) -> None:
        assert self.runtime is not None
        services.worker_heartbeat(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            model_version=self.runtime.model_version,
            info=self.info(),
        )

    def _heartbeat_loop(self) -> None:
        """Every WORKER_HEARTBEAT_SECONDS: report in, renew the leases of the jobs this
        process holds, requeue jobs whose holder was lost, and re-wake jobs queued too long.
        A frozen process stops renewing, so its jobs go to another worker."""
        last_sweep = 0.0
        while not self._stop.wait(settings.WORKER_HEARTBEAT_SECONDS):
            try:
                close_old_connections()
                self._beat()
                # The batch in hand and the one claimed ahead (being preprocessed).
                ahead = self._ahead
                for batch in (self.current_batch, ahead[0] if ahead else None):
                    if batch is not None:
                        services.job_renew_leases(claim_token=batch.claim_token)
                services.job_reap_expired()
                if time.monotonic() - last_sweep >= settings.SWEEP_AFTER_SECONDS / 2:
                    services.job_sweep_queued(older_than_seconds=settings.SWEEP_AFTER_SECONDS)
                    last_sweep = time.monotonic()
            except Exception:
                logger.warning("event=heartbeat_failed worker_id=%s", self.worker_id, exc_info=True)
                connection.close()
        connection.close()

    # --- work ----------------------------------------------------------------
    def drain(self, hint: list[str] | None = None) -> int:
        """Claim and run batches until no queued job is left, or DRAIN_MAX_SECONDS have passed
        (then hand over to a fresh wake-up, so a task never runs long: warm shutdown waits
        for at most one drain, and the broker's visibility timeout is never reached)."""
        self.start()
        assert self.runtime is not None
        self._install_sigterm_handler()
        logger.debug("event=wakeup worker_id=%s job_ids=%s", self.worker_id, ",".join(hint or []))
        started = time.monotonic()
        self._drain_deadline = started + settings.DRAIN_MAX_SECONDS
        done = 0
        while not (self._stop.is_set() or self._shutdown.is_set()):
            # A batch claimed ahead is run first, even a little past the deadline.
            if self._ahead is None and time.monotonic() > self._drain_deadline:
                services.job_sweep_queued(older_than_seconds=0, limit=settings.BATCH_MAX_SIZE)
                return done
            if self._ahead is None:
                self._wait_for_batch()
                batch = self._claim()
            else:
                batch = self._ahead[0]
            if not batch.jobs:
                return done
            self.current_batch = batch
            try:
                done += self.run_batch(batch)
            except Exception as exc:
                self._give_back(batch, exc)
                self._release_ahead()
                raise
            finally:
                self.current_batch = None
                if self._shutdown.is_set():
                    self._release_ahead()
                    self._exit()
        self._release_ahead()
        return done

    def _claim(self) -> ClaimedBatch:
        assert self.runtime is not None
        return services.job_claim_batch(
            worker_id=self.worker_id,
            model_version=self.runtime.model_version,
            max_size=settings.BATCH_MAX_SIZE,
        )

    def _give_back(self, batch: ClaimedBatch, exc: Exception) -> None:
        """An error escaped the batch (database gone mid-store, a bug): requeue its jobs
        with backoff, or leave them to lapse when even that fails; never keep them."""
        logger.exception("event=batch_error batch_id=%s error=%r", batch.batch_id, exc)
        try:
            services.job_retry_later(
                job_ids=batch.job_ids,
                claim_token=batch.claim_token,
                code="worker_error",
                message=f"{type(exc).__name__}: {exc}"[:500],
            )
        except Exception:  # noqa: BLE001 - database gone too: the lease lapses and the reaper requeues
            logger.warning("event=give_back_failed batch_id=%s (leases will lapse)", batch.batch_id)

    def _wait_for_batch(self) -> None:
        """Give a partial batch up to BATCH_MAX_WAIT_MS to fill."""
        assert self.runtime is not None
        deadline = time.monotonic() + settings.BATCH_MAX_WAIT_MS / 1000
        poll = max(settings.BATCH_MAX_WAIT_MS / 1000 / 4, 0.005)
        while time.monotonic() < deadline:
            queued = services.job_queued_count(model_version=self.runtime.model_version)
            if queued == 0 or queued >= settings.BATCH_MAX_SIZE:
                return
            time.sleep(min(poll, max(deadline - time.monotonic(), 0)))

    # --- preprocessing pool and claim-ahead -----------------------------------
    def _preprocess_pool(self) -> PreprocessPool:
        if self._pool is None:
            self._pool = PreprocessPool(settings.PREPROCESS_WORKERS)
        return self._pool

    def _start_preprocessing(self, batch: ClaimedBatch) -> Prepared:
        from worker.runtime.preprocess import preprocess

        # The runtime picks exact or fast preprocessing (fast mode); a stand-in may not say.
        prep = getattr(self.runtime, "preprocess", preprocess)

        def reader(job):
            def read() -> bytes:
                with job.upload.open("rb") as fh:
                    return fh.read()

            return read

        return self._preprocess_pool().submit([(job, reader(job)) for job in batch.jobs], prep)

    def _claim_ahead(self) -> None:
        """Claim the next batch now and start preprocessing it beside this batch's inference."""
        pool = self._preprocess_pool()
        stopping = self._stop.is_set() or self._shutdown.is_set()
        if not pool.overlaps or stopping or time.monotonic() > self._drain_deadline:
            return
        batch = self._claim()
        if batch.jobs:
            self._ahead = (batch, self._start_preprocessing(batch))

    def _release_ahead(self) -> None:
        """Give back a batch claimed ahead that this worker will not run (undoes the attempt)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            services.job_release(job_ids=ahead[0].job_ids, claim_token=ahead[0].claim_token)
            logger.info("event=batch_released batch_id=%s size=%d", ahead[0].batch_id, len(ahead[0].jobs))

    def run_batch(self, batch: ClaimedBatch) -> int:
        from worker.runtime.preprocess import PreprocessError

        rt = self.runtime
        assert rt is not None
        t0 = time.perf_counter()
        if self._ahead is not None and self._ahead[0] is batch:
            prepared, self._ahead = self._ahead[1], None  # claimed ahead: its preprocessing has run
        else:
            self._release_ahead()
            prepared = self._start_preprocessing(batch)
        inputs: list[np.ndarray] = []
        ok_jobs = []
        pre_ms: dict[uuid.UUID, float] = {}
        for job, outcome in prepared.results():
            pre_ms[job.id] = outcome.ms
            if outcome.error is None:
                assert outcome.array is not None
                inputs.append(outcome.array)
                ok_jobs.append(job)
            elif isinstance(outcome.error, PreprocessError):
                self._fail(batch, job.id, outcome.error.code, str(outcome.error))
            elif isinstance(outcome.error, OSError):
                exc = outcome.error
                self._fail(batch, job.id, "upload_unreadable", f"{type(exc).__name__}: {exc}")
            else:
                raise outcome.error
        preprocessed = time.perf_counter()
        self._claim_ahead()
        t1 = time.perf_counter()
        if not ok_jobs:
            return len(batch.jobs)
        try:
            probs = rt.predict(np.stack(inputs))
        except Exception as exc:
            # One image may have broken the whole forward pass: send them all back. Having
            # been attempted, each is claimed alone next time, so only the culprit keeps
            # failing, until MAX_ATTEMPTS.
            logger.exception("event=inference_failed batch_id=%s size=%d", batch.batch_id, len(ok_jobs))
            services.job_retry_later(
                job_ids=[j.id for j in ok_jobs],
                claim_token=batch.claim_token,
                code="inference_failed",
                message=f"{type(exc).__name__}: {exc}"[:500],
            )
            return len(batch.jobs)
        t2 = time.perf_counter()
        provenance = rt.provenance()
        rows = [dict(zip(rt.labels, map(float, row), strict=True)) for row in probs]
        t3 = time.perf_counter()
        inference_ms, post_ms = _ms(t2 - t1), _ms(t3 - t2)
        outcomes = [
            InferenceOutcome(
                job_id=job.id,
                probabilities=row,
                provenance=provenance,
                timings={
                    "preprocess_ms": pre_ms[job.id],
                    "inference_ms": inference_ms,
                    "inference_ms_per_image": round(inference_ms / len(ok_jobs), 3),
                    "postprocess_ms": post_ms,
                    "batch_id": str(batch.batch_id),
                    "batch_size": len(ok_jobs),
                    "worker_id": self.worker_id,
                },
            )
            for job, row in zip(ok_jobs, rows, strict=True)
        ]
        stored = services.job_store_results(batch=batch, outcomes=outcomes)
        logger.info(
            "event=batch_done batch_id=%s size=%d stored=%d preprocess_ms=%.1f inference_ms=%.1f "
            "postprocess_ms=%.1f store_ms=%.1f job_ids=%s",
            batch.batch_id,
            len(batch.jobs),
            len(stored),
            _ms(preprocessed - t0),
            inference_ms,
            post_ms,
            _ms(time.perf_counter() - t3),
            ",".join(str(j.id) for j in batch.jobs),
        )
        return len(batch.jobs)

    def _fail(self, batch: ClaimedBatch, job_id: uuid.UUID, code: str, message: str) -> None:
        services.job_fail(job_id=job_id, claim_token=batch.claim_token, code=code, message=message)
        logger.warning("event=job_failed job_id=%s batch_id=%s code=%s", job_id, batch.batch_id, code)


_processor: Processor | None = None


def get_processor() -> Processor:
    global _processor
    if _processor is None:
        _processor = Processor()
    return _processor


def stop_processor() -> None:
    if _processor is not None:
        _processor.stop()
