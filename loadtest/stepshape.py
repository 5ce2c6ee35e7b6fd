"""Step load to find the knee: start at CXRQ_STEP_START users, add CXRQ_STEP_USERS every
CXRQ_STEP_SECONDS, and stop once the cache-miss end-to-end p95 (Locust's current window)
passes CXRQ_KNEE_P95_MS (5 s) after a step has settled, or at CXRQ_STEP_MAX users.
`loadtest/run --step` reports the knee per step from the recorded samples."""

from __future__ import annotations

import os

from locust import LoadTestShape
from locustfile import CacheHitUser, CacheMissUser  # noqa: F401 - the users this shape drives

START = int(os.environ.get("CXRQ_STEP_START", "10"))
STEP = int(os.environ.get("CXRQ_STEP_USERS", "10"))
SECONDS = int(os.environ.get("CXRQ_STEP_SECONDS", "45"))
MAX = int(os.environ.get("CXRQ_STEP_MAX", "200"))
KNEE_P95_MS = float(os.environ.get("CXRQ_KNEE_P95_MS", "5000"))


class StepShape(LoadTestShape):
    def tick(self):
        run_time = self.get_run_time()
        step = int(run_time // SECONDS)
        users = START + step * STEP
        settled = run_time - step * SECONDS >= SECONDS * 0.8
        if settled and self._miss_p95() > KNEE_P95_MS:
            return None  # past the knee: this step is the last
        if users > MAX:
            return None
        return users, users

    def _miss_p95(self) -> float:
        entry = self.runner.stats.get("cache_miss", "E2E")
        return entry.get_current_response_time_percentile(0.95) or 0.0
