"""Preprocessing in worker threads, so that it overlaps inference.

The worker hands a claimed batch to the pool and gets a `Prepared` handle;
while the model runs on one batch, the pool reads, decodes and preprocesses
the next (worker/batching.py claims it ahead). Decoding (Pillow, pydicom's
codecs), OpenCV and numpy release the GIL for the heavy work, so threads are
enough and nothing is copied between processes. With 0 workers everything
runs inline, in the caller's thread, when the result is asked for.

Every item succeeds or fails alone: a failure is returned with its item, never
raised for the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

Key = TypeVar("Key")


@dataclass(frozen=True)
class Outcome:
    array: np.ndarray | None
    error: BaseException | None
    ms: float


def _run(read: Callable[[], bytes], preprocess: Callable[[bytes], np.ndarray]) -> Outcome:
    started = time.perf_counter()
    try:
        array = preprocess(read())
        return Outcome(array, None, round((time.perf_counter() - started) * 1000, 3))
    except Exception as exc:  # noqa: BLE001 - handed back with its item, the caller decides
        return Outcome(None, exc, round((time.perf_counter() - started) * 1000, 3))


class Prepared(Generic[Key]):
    """The preprocessing of one batch, running or done."""

    def __init__(self, keys: Sequence[Key], futures: list[Future[Outcome]] | None, inline: list | None):
        self.keys = list(keys)
        self._futures = futures
        self._inline = inline

    def results(self) -> list[tuple[Key, Outcome]]:
        """Waits for every item; in submission order."""
        if self._futures is not None:
            return list(zip(self.keys, (f.result() for f in self._futures), strict=True))
        assert self._inline is not None
        return list(zip(self.keys, (_run(read, pre) for read, pre in self._inline), strict=True))


class PreprocessPool:
    def __init__(self, workers: int):
        self.workers = max(0, workers)
        self._executor = (
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="cxrq-preprocess")
            if self.workers
            else None
        )

    @property
    def overlaps(self) -> bool:
        """Whether submitted work runs beside the caller (0 workers: inline, at results())."""
        return self._executor is not None

    def submit(
        self,
        items: Sequence[tuple[Key, Callable[[], bytes]]],
        preprocess: Callable[[bytes], np.ndarray],
    ) -> Prepared[Key]:
        keys = [key for key, _ in items]
        if self._executor is None:
            return Prepared(keys, None, [(read, preprocess) for _, read in items])
        return Prepared(keys, [self._executor.submit(_run, read, preprocess) for _, read in items], None)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
