"""The inference handler: preprocess -> infer -> postprocess for one claimed batch.

It owns what a result says (labels, provenance, per-phase timings) and which
images cannot be run (a bad image is rejected alone, with its code). It knows
nothing of job states: the batch loop (worker/batch_loop.py) stores, fails or
retries what it returns. Shaped like TorchServe's BaseHandler.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.jobs.errors import JOB_ERROR_MESSAGES
from backend.jobs.models import Job
from backend.jobs.services.claims import ClaimedBatch, InferenceOutcome
from worker.runtime.prep_pool import Prepared, PreprocessPool
from worker.runtime.preprocess import PreprocessError
from worker.runtime.protocol import Runtime

logger = logging.getLogger(__name__)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass(frozen=True)
class Rejected:
    """An image that cannot be run (undecodable, unreadable): its job fails alone."""

    job_id: uuid.UUID
    code: str
    message: str


@dataclass
class HandledBatch:
    outcomes: list[InferenceOutcome] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # The forward pass failed: every image that reached it goes back to the queue.
    inference_error: Exception | None = None
    inferred_job_ids: list[uuid.UUID] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _reader(job: Job) -> Callable[[], bytes]:
    def read() -> bytes:
        with job.upload.open("rb") as fh:
            return fh.read()

    return read


class InferenceHandler:
    def __init__(self, runtime: Runtime, *, worker_id: str, pool: PreprocessPool):
        self.runtime, self.worker_id, self.pool = runtime, worker_id, pool

    def start_preprocessing(self, batch: ClaimedBatch) -> Prepared[Job]:
        """Read and preprocess the batch's images in the pool (beside another batch's inference)."""
        return self.pool.submit([(job, _reader(job)) for job in batch.jobs], self.runtime.preprocess)

    def preprocess(
        self, prepared: Prepared[Job]
    ) -> tuple[list[Job], np.ndarray | None, list[Rejected], dict]:
        """Wait for the batch's inputs: (jobs that can run, their stacked inputs, rejected, ms per job)."""
        jobs, inputs, rejected, ms = [], [], [], {}
        for job, outcome in prepared.results():
            ms[job.id] = outcome.ms
            if outcome.error is None:
                assert outcome.array is not None
                jobs.append(job)
                inputs.append(outcome.array)
            elif isinstance(outcome.error, PreprocessError):
                rejected.append(Rejected(job.id, outcome.error.code, str(outcome.error)))
            elif isinstance(outcome.error, OSError):
                # The client reads a sentence; the error (it names a path) stays in this log.
                logger.warning(
                    "event=upload_unreadable job_id=%s error=%s", job.id, type(outcome.error).__name__
                )
                rejected.append(
                    Rejected(job.id, "upload_unreadable", JOB_ERROR_MESSAGES["upload_unreadable"])
                )
            else:
                raise outcome.error  # a bug, not a bad image: the batch loop gives the batch back
        return jobs, (np.stack(inputs) if inputs else None), rejected, ms

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        probs = self.runtime.predict(inputs)
        if len(probs) != len(inputs):
            raise RuntimeError(f"the model returned {len(probs)} outputs for {len(inputs)} inputs")
        return probs

    def postprocess(self, probs: np.ndarray) -> list[dict[str, float]]:
        """Model outputs -> label -> probability, in the model's label order."""
        labels = self.runtime.labels
        return [dict(zip(labels, map(float, row), strict=True)) for row in probs]

    def _outcomes(
        self, batch: ClaimedBatch, jobs: list[Job], rows: list[dict[str, float]], timings: dict[str, Any]
    ) -> list[InferenceOutcome]:
        provenance = self.runtime.provenance()
        shared = {
            "inference_ms": timings["inference_ms"],
            "inference_ms_per_image": round(timings["inference_ms"] / len(jobs), 3),
            "postprocess_ms": timings["postprocess_ms"],
            "batch_id": str(batch.batch_id),
            "batch_size": len(jobs),
            "worker_id": self.worker_id,
        }
        return [
            InferenceOutcome(
                job_id=job.id,
                probabilities=row,
                provenance=provenance,
                timings={"preprocess_ms": timings["preprocess_ms_by_job"][job.id], **shared},
            )
            for job, row in zip(jobs, rows, strict=True)
        ]

    def handle(
        self, batch: ClaimedBatch, prepared: Prepared[Job], *, before_inference: Callable[[], None]
    ) -> HandledBatch:
        """Run one batch. `before_inference` runs once its inputs are ready (the batch loop
        claims the next batch there, so its preprocessing overlaps this inference)."""
        t0 = time.perf_counter()
        jobs, inputs, rejected, pre_ms = self.preprocess(prepared)
        handled = HandledBatch(rejected=rejected, timings={"preprocess_ms": _ms(time.perf_counter() - t0)})
        before_inference()
        if inputs is None:
            return handled
        handled.inferred_job_ids = [j.id for j in jobs]
        t1 = time.perf_counter()
        try:
            probs = self.infer(inputs)
        except Exception as exc:  # noqa: BLE001 - one image may have broken the whole pass
            handled.inference_error = exc
            return handled
        t2 = time.perf_counter()
        rows = self.postprocess(probs)
        t3 = time.perf_counter()
        handled.timings |= {"inference_ms": _ms(t2 - t1), "postprocess_ms": _ms(t3 - t2)}
        handled.outcomes = self._outcomes(
            batch, jobs, rows, handled.timings | {"preprocess_ms_by_job": pre_ms}
        )
        return handled
