"""Measuring an engine configuration with the worker's own pipeline, without the database: what
`make tune` (tools/tune.py) sweeps and what a worker's first-start tune (worker/runtime/autotune.py)
runs, so that both choose from the same figures.

The stream is Processor.drain's with a full queue: batches of `batch_size`, preprocessing in the
pool, the next batch preprocessed while the model runs this one (claim-ahead).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class StreamStats:
    images: int = 0
    seconds: float = 0.0
    preprocess_ms: list[float] = field(default_factory=list)  # per image
    inference_ms: list[float] = field(default_factory=list)  # per image (batch time / size)
    e2e_ms: list[float] = field(default_factory=list)  # per image: its batch's latency / size
    batch_ms: list[float] = field(default_factory=list)  # preprocessing start -> probabilities
    probs: list[np.ndarray] = field(default_factory=list)

    def add(self, other: StreamStats) -> None:
        self.images += other.images
        self.seconds += other.seconds
        for name in ("preprocess_ms", "inference_ms", "e2e_ms", "batch_ms", "probs"):
            getattr(self, name).extend(getattr(other, name))

    @property
    def img_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def run_stream(
    images: Sequence[bytes],
    *,
    preprocess: Callable[[bytes], np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    pool,
    deadline: float | None = None,
) -> StreamStats:
    """Process the images like Processor.drain with a full queue (claim-ahead included).
    `deadline` (time.monotonic()): no batch starts after it (at least one runs)."""
    stats = StreamStats()
    batches = [list(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]

    def submit(batch: list[bytes]):
        return time.perf_counter(), pool.submit(
            [(i, (lambda d=d: d)) for i, d in enumerate(batch)], preprocess
        )

    started = time.perf_counter()
    pending = submit(batches[0])
    for k in range(len(batches)):
        if k and deadline is not None and time.monotonic() >= deadline:
            batches = batches[:k]  # the batch claimed ahead is dropped: the pool's shutdown cancels it
            break
        submitted, prepared = pending
        outcomes = [outcome for _, outcome in prepared.results()]
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
        if k + 1 < len(batches) and pool.overlaps:
            pending = submit(batches[k + 1])  # the worker's claim-ahead
        x = np.stack([o.array for o in outcomes])
        t0 = time.perf_counter()
        probs = predict(x)
        t1 = time.perf_counter()
        n = len(outcomes)
        stats.preprocess_ms += [o.ms for o in outcomes]
        stats.inference_ms += [(t1 - t0) * 1000 / n] * n
        stats.e2e_ms += [(t1 - submitted) * 1000 / n] * n
        stats.batch_ms.append((t1 - submitted) * 1000)
        stats.probs += list(probs)
        if k + 1 < len(batches) and not pool.overlaps:
            pending = submit(batches[k + 1])
    stats.seconds = time.perf_counter() - started
    stats.images = sum(len(b) for b in batches)
    return stats


def measure(
    runtime,
    images: list[bytes],
    *,
    batch_size: int,
    workers: int,
    seconds: float,
    deadline: float | None = None,
) -> dict:
    """Saturated throughput and batch latency of one configuration (full queue): streams of at
    least three batches until `seconds` of them have run. `deadline` (time.monotonic()) ends it
    sooner, between two batches: a bounded tune overruns by a warm-up and one batch at most."""
    from worker.runtime.prep_pool import PreprocessPool

    pool = PreprocessPool(workers)
    stream = images * max(1, -(-3 * batch_size // len(images)))  # at least three batches
    stream = stream[: max(3 * batch_size, len(images))]
    try:
        run_stream(  # warm-up: the first batch of a size is slower
            stream[:batch_size],
            preprocess=runtime.preprocess,
            predict=runtime.predict,
            batch_size=batch_size,
            pool=pool,
        )
        total = StreamStats()
        while total.seconds < seconds and not (total.images and deadline and time.monotonic() >= deadline):
            total.add(
                run_stream(
                    stream,
                    preprocess=runtime.preprocess,
                    predict=runtime.predict,
                    batch_size=batch_size,
                    pool=pool,
                    deadline=deadline,
                )
            )
    finally:
        pool.shutdown()
    return {
        "img_s": round(total.img_s, 2),
        "p95_batch_ms": round(float(np.percentile(total.batch_ms, 95)), 1),
        "p50_batch_ms": round(float(np.percentile(total.batch_ms, 50)), 1),
    }


# Several worker processes only win when they beat one process by this much (memory: one model each).
MULTI_PROCESS_MARGIN = 1.10


def choose(rows: list[dict], budget_ms: float, *, multi_process: bool = False) -> dict:
    """Best throughput within the p95 batch-latency budget. Within 3% of it (noise), the lowest
    p95 latency wins.

    Several worker processes multiply memory (one model each) and only help if the worker is
    started with that --concurrency, so they are chosen only with `multi_process`, and then
    only when they win by 10% or more."""
    within = [r for r in rows if r["p95_batch_ms"] <= budget_ms] or rows
    best_single = max((r["img_s"] for r in within if r.get("worker_concurrency", 1) == 1), default=0.0)
    candidates = [
        r
        for r in within
        if r.get("worker_concurrency", 1) == 1
        or (multi_process and r["img_s"] >= MULTI_PROCESS_MARGIN * best_single)
    ]
    best_img_s = max(r["img_s"] for r in candidates)
    near = [r for r in candidates if r["img_s"] >= 0.97 * best_img_s]
    return min(near, key=lambda r: (r.get("worker_concurrency", 1), r["p95_batch_ms"], r["threads"]))
