"""The hospital workflow under load: upload a chest X-ray, poll every 100 ms until done
(or, with CXRQ_LOADTEST_WAIT_S=N, wait for it with GET ?wait=N: one request per job).

  CacheMissUser (weight 7): a never-seen image each time — a sample X-ray with one
      pixel changed by one grey level (invisible, deterministic, new sha256) — so
      every upload needs inference.
  CacheHitUser (weight 3): images already analysed; the API answers from cache.

Besides Locust's per-request stats, each scenario records an end-to-end metric
(upload -> terminal status) as request type "E2E", name "cache_miss"/"cache_hit".
A 5xx, a poll past the timeout, a failed job or a job that vanishes is a failure.

Target: Locust's --host. API key: CXRQ_API_KEY, sent as "Authorization: Api-Key <key>"
when set (the API accepts requests without one until keys exist).
"""

from __future__ import annotations

import io
import itertools
import os
import threading
import time
from pathlib import Path

import numpy as np
from locust import HttpUser, between, events, task
from PIL import Image

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "cxr"
MISS_SOURCES = ["00000001_000.png", "00027426_000.png", "h0001.png", "tb0005.png", "tb0007.png"]
HIT_SOURCES = ["00000001_000.png", "00027426_000.png", "16747_3_1.jpg", "h0001.png", "tb0005.png"]
POLL_INTERVAL_S = float(os.environ.get("CXRQ_POLL_INTERVAL_S", "0.1"))
# Long-poll instead: each "poll" is GET ?wait=N, answered when the job ends (docs/api.md).
WAIT_S = int(os.environ.get("CXRQ_LOADTEST_WAIT_S", "0"))
JOB_TIMEOUT_S = float(os.environ.get("CXRQ_JOB_TIMEOUT_S", "120"))
# Distinct per run, so a second run against the same database still misses the cache.
RUN_SALT = int(os.environ.get("CXRQ_LOADTEST_SALT", str(int(time.time()) % 1_000_000)))

_sources = {name: np.asarray(Image.open(DATA / name)) for name in MISS_SOURCES}
_counter = itertools.count()
_counter_lock = threading.Lock()


def unseen_image() -> bytes:
    """A sample X-ray with one pixel nudged by one grey level: new bytes, same picture."""
    with _counter_lock:
        n = next(_counter)
    name = MISS_SOURCES[n % len(MISS_SOURCES)]
    arr = _sources[name].copy()
    k = RUN_SALT * 1_000_003 + n
    y, x = (k // arr.shape[1]) % arr.shape[0], k % arr.shape[1]
    arr[y, x] = arr[y, x] + 1 if np.all(arr[y, x] < 255) else arr[y, x] - 1
    # Also vary a second pixel so that runs past height*width uploads stay unique.
    arr[(k // 7) % arr.shape[0], (k // 13) % arr.shape[1]] ^= 1
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


_samples_path = os.environ.get("CXRQ_LOADTEST_SAMPLES")
_samples_file = open(_samples_path, "a", buffering=1) if _samples_path else None  # noqa: SIM115


@events.request.add_listener
def _keep_sample(request_type, name, response_time, exception, **_kwargs) -> None:
    """Every request and end-to-end sample, with its time, for per-window figures and plots."""
    if _samples_file is not None:
        ok = 0 if exception else 1
        _samples_file.write(f"{time.time():.3f},{request_type},{name},{response_time:.1f},{ok}\n")


def auth_headers() -> dict[str, str]:
    key = os.environ.get("CXRQ_API_KEY")
    return {"Authorization": f"Api-Key {key}"} if key else {}


class _XrayUser(HttpUser):
    abstract = True
    wait_time = between(0.5, 1.5)
    scenario = ""

    def on_start(self) -> None:
        self.client.headers.update(auth_headers())

    def _record(self, started: float, exc: Exception | None, length: int = 0) -> None:
        events.request.fire(
            request_type="E2E",
            name=self.scenario,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    def upload_and_wait(self, data: bytes, filename: str) -> None:
        started = time.perf_counter()
        with self.client.post(
            "/api/v1/jobs",
            files={"image": (filename, data)},
            name=f"upload {self.scenario}",
            catch_response=True,
        ) as r:
            if r.status_code not in (200, 202):
                r.failure(f"upload answered {r.status_code}: {r.text[:200]}")
                self._record(started, RuntimeError(f"upload {r.status_code}"))
                return
            body = r.json()
        deadline = started + JOB_TIMEOUT_S
        while body["status"] not in ("succeeded", "failed", "cancelled"):
            if time.perf_counter() > deadline:
                self._record(started, TimeoutError(f"job {body['id']} not done in {JOB_TIMEOUT_S}s"))
                return
            if not WAIT_S:
                time.sleep(POLL_INTERVAL_S)
            url = f"/api/v1/jobs/{body['id']}" + (f"?wait={WAIT_S}" if WAIT_S else "")
            with self.client.get(url, name="poll", catch_response=True) as p:
                if p.status_code != 200:  # a 404 here is a lost job
                    p.failure(f"poll answered {p.status_code}")
                    self._record(started, RuntimeError(f"poll {p.status_code}"))
                    return
                body = p.json()
        if body["status"] == "failed":
            self._record(started, RuntimeError(f"job failed: {body['error']}"))
            return
        if len(body["result"]["probabilities"]) != 18:
            self._record(started, RuntimeError("result without 18 probabilities"))
            return
        self._record(started, None, len(data))


class CacheMissUser(_XrayUser):
    weight = 7
    scenario = "cache_miss"

    @task
    def new_xray(self) -> None:
        self.upload_and_wait(unseen_image(), "new.png")


class CacheHitUser(_XrayUser):
    weight = 3
    scenario = "cache_hit"

    @task
    def known_xray(self) -> None:
        name = HIT_SOURCES[int(time.perf_counter() * 1000) % len(HIT_SOURCES)]
        self.upload_and_wait((DATA / name).read_bytes(), name)
