"""The web's upload counter: new jobs against uploads answered by dedup (the cache-hit ratio).

Counted in the process that took the upload; the scrape sums every web process's count
(multiprocess.py). The counter is made on first use, not at import, so that importing the
API in gunicorn's master (before it forks) cannot import prometheus_client too early.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_counter: Any = None

NEW, DEDUPLICATED = "new", "deduplicated"


def _uploads() -> Any:
    global _counter
    with _lock:
        if _counter is None:
            from prometheus_client import Counter

            counter = Counter(
                "cxrq_uploads",
                "Uploads by outcome: a new job, or answered by an existing one (dedup, organisation cache).",
                ["outcome"],
            )
            for outcome in (NEW, DEDUPLICATED):
                counter.labels(outcome)  # both series from the first upload, so ratios start at once
            _counter = counter
        return _counter


def count_upload(*, deduplicated: bool) -> None:
    _uploads().labels(DEDUPLICATED if deduplicated else NEW).inc()
