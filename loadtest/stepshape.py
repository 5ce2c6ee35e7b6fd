"""Step load: start at CXRQ_STEP_START users, add CXRQ_STEP_USERS every CXRQ_STEP_SECONDS,
up to CXRQ_STEP_MAX. `loadtest/run --step` finds the knee (p95 end-to-end > 5 s) afterwards
from the recorded samples."""

from __future__ import annotations

import os

from locust import LoadTestShape
from locustfile import CacheHitUser, CacheMissUser  # noqa: F401 - the users this shape drives

START = int(os.environ.get("CXRQ_STEP_START", "10"))
STEP = int(os.environ.get("CXRQ_STEP_USERS", "10"))
SECONDS = int(os.environ.get("CXRQ_STEP_SECONDS", "45"))
MAX = int(os.environ.get("CXRQ_STEP_MAX", "80"))


class StepShape(LoadTestShape):
    def tick(self):
        step = int(self.get_run_time() // SECONDS)
        users = START + step * STEP
        if users > MAX:
            return None
        return users, users
