"""What the worker counts and times, in the pool child that runs the batch. The worker's main
process serves them, summed over its children (worker/metrics_server.py, docs/observability.md).

Phases (cxrq_worker_phase_seconds{phase}):
  decode       per image: bytes -> pixels (worker/runtime/decode.py, and fast mode's reduced JPEG)
  preprocess   per image: read the stored file, decode, resize and normalise (decode included)
  infer        per batch: the forward pass
  postprocess  per batch: outputs -> label -> probability
  store        per batch: results written and jobs ended, one transaction

This module is imported only where batches run (the pool children, tests, tools); the main
process must not import it before it has chosen the metrics folder.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from django.utils import timezone
from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from backend.jobs.models import Job

BATCH_SIZE = Histogram(
    "cxrq_worker_batch_size",
    "Jobs per claimed micro-batch, counted when the batch has run.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
PHASE_SECONDS = Histogram(
    "cxrq_worker_phase_seconds",
    "Time per phase: decode and preprocess per image, infer, postprocess and store per batch.",
    ["phase"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
END_TO_END_SECONDS = Histogram(
    "cxrq_job_end_to_end_seconds",
    "From the job's creation (upload) to its end, for jobs a worker ended (succeeded or failed).",
    ["status", "priority"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)
JOBS = Counter(
    "cxrq_worker_jobs",
    "Jobs a worker moved on: succeeded, failed (image cannot be run), retried (inference error).",
    ["outcome"],
)
PHASES = ("decode", "preprocess", "infer", "postprocess", "store")
for _phase in PHASES:
    PHASE_SECONDS.labels(_phase)
for _outcome in ("succeeded", "failed", "retried"):
    JOBS.labels(_outcome)


def batch_ran(*, size: int, timings: dict[str, Any], preprocess_ms: Iterable[float]) -> None:
    """A batch came back from the handler: its size, per-image preprocessing, its passes."""
    BATCH_SIZE.observe(size)
    for ms in preprocess_ms:
        PHASE_SECONDS.labels("preprocess").observe(ms / 1000)
    for phase, key in (("infer", "inference_ms"), ("postprocess", "postprocess_ms")):
        if key in timings:
            PHASE_SECONDS.labels(phase).observe(timings[key] / 1000)


def stored(seconds: float) -> None:
    PHASE_SECONDS.labels("store").observe(seconds)


def job_ended(job: Job, *, status: str) -> None:
    """A job this worker ended: its end-to-end time and the count by outcome."""
    from backend.jobs.models import Priority  # here: decode.py imports this module, Django or not

    priority = Priority(job.priority).label if job.priority in Priority.values else "unknown"
    END_TO_END_SECONDS.labels(status, priority).observe(
        max((timezone.now() - job.created_at).total_seconds(), 0)
    )
    JOBS.labels(status).inc()


def jobs_retried(count: int) -> None:
    JOBS.labels("retried").inc(count)


R = TypeVar("R")


def timed_decode(decode: Callable[..., R]) -> Callable[..., R]:
    """Times a decoder into phase="decode"; a decoder that returns None (it declined the
    image, another one decodes it) and one that raises are not counted."""

    @functools.wraps(decode)
    def timed(*args: Any, **kwargs: Any) -> R:
        started = time.perf_counter()
        result = decode(*args, **kwargs)
        if result is not None:
            PHASE_SECONDS.labels("decode").observe(time.perf_counter() - started)
        return result

    return timed
