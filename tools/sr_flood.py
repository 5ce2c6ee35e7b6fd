"""One client floods GET /api/v1/jobs/{id}/sr.dcm; does health, or another client, slow down?
(`make sr-flood`, docs/performance.md "SR and FHIR under a flood".)

The production stack (loadtest/stack.py: gunicorn + the uvicorn edge, backend/edge/server.py) on a
fresh PostgreSQL database with Redis as broker and cache, and a Celery worker with the fake model.
Two clients, A and B, each get succeeded jobs (PNG uploads). Then:

1. quiet: health and B's `GET /api/v1/jobs/{id}` sampled alone (the baseline);
2. flood: `--concurrency` threads of client A each loop `GET sr.dcm` over A's jobs for
   `--seconds`, while health and B's GET are sampled as before. The first answer for each of A's
   jobs is "cold" (nothing built yet), the later ones "warm". A 429 is honoured as a client is
   asked to (it waits Retry-After) unless `--ignore-retry-after`, and counted.

Prints a table and, last, one JSON line. Figures are wall-clock on a shared machine: the CPU,
`nproc` and the load average are printed with them; compare ratios from one run.

    python -m tools.sr_flood [--seconds 30] [--concurrency 16] [--jobs 16] [--json var/sr-flood.json]

To measure another checkout (an older commit), copy this file into its tools/ and run it there:
it starts that checkout's server.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.stack import ProcessStack  # noqa: E402


def _png(seed: int) -> bytes:
    img = Image.effect_noise((256, 256), 40 + seed % 50).convert("L")
    img.putpixel((0, 0), seed % 256)
    img.putpixel((1, 0), seed // 256 % 256)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    return {"nproc": os.cpu_count(), "cpu": model, "loadavg": loadavg}


def _summary(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


class Sampler(threading.Thread):
    """One request every `interval` seconds (after the previous answer), latencies kept."""

    def __init__(self, url: str, headers: dict[str, str], interval: float, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.headers, self.interval, self.stop = url, headers, interval, stop
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                status = session.get(self.url, headers=self.headers, timeout=60).status_code
            except requests.RequestException:
                status = 0
            self.latencies.append(time.monotonic() - t0)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.stop.wait(self.interval)


class Flooder(threading.Thread):
    """Client A: GET sr.dcm over its jobs, one request after another, until told to stop."""

    def __init__(self, base: str, headers: dict[str, str], jobs: list[str], start: int, state: dict):
        super().__init__(daemon=True)
        self.base, self.headers, self.jobs, self.index, self.state = base, headers, jobs, start, state

    def run(self) -> None:
        session = requests.Session()
        stop: threading.Event = self.state["stop"]
        while not stop.is_set():
            job = self.jobs[self.index % len(self.jobs)]
            self.index += 1
            with self.state["lock"]:
                cold = job not in self.state["asked"]
                self.state["asked"].add(job)
            t0 = time.monotonic()
            try:
                response = session.get(
                    f"{self.base}/api/v1/jobs/{job}/sr.dcm", headers=self.headers, timeout=120
                )
                status = response.status_code
            except requests.RequestException:
                response, status = None, 0
            elapsed = time.monotonic() - t0
            with self.state["lock"]:
                self.state["statuses"][status] = self.state["statuses"].get(status, 0) + 1
                if status == 200:
                    self.state["cold" if cold else "warm"].append(elapsed)
                elif status == 429:
                    self.state["refused"].append(elapsed)
                if status != 200 and cold:
                    self.state["asked"].discard(job)  # still cold next time
            if status == 429 and response is not None and not self.state["ignore_retry_after"]:
                stop.wait(float(response.headers.get("Retry-After") or 1))


def _create_database() -> str:
    name = f"cxrq_srflood_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"create database {name}"],
        check=True,
        capture_output=True,
    )
    return name


def _drop_database(name: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"drop database if exists {name} with (force)"],
        capture_output=True,
    )


def _jobs(stack: ProcessStack, key: str, n: int, seed: int) -> list[str]:
    headers = {"Authorization": f"Api-Key {key}"}
    ids = []
    for i in range(n):
        r = requests.post(
            f"{stack.web_url}/api/v1/jobs",
            files={"image": (f"{i}.png", _png(seed + i))},
            headers=headers,
            timeout=60,
        )
        if r.status_code not in (200, 201, 202):
            raise RuntimeError(f"upload: {r.status_code} {r.text[:300]}")
        ids.append(r.json()["id"])
    deadline = time.monotonic() + 180
    for job in ids:
        while True:
            body = requests.get(
                f"{stack.web_url}/api/v1/jobs/{job}?wait=20", headers=headers, timeout=60
            ).json()
            if body.get("status") == "succeeded":
                break
            if body.get("status") in ("failed", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(f"job {job} did not succeed: {body}")
    return ids


def _measure(args, stack: ProcessStack, key_a: str, key_b: str, jobs_a: list[str], job_b: str) -> dict:
    health_url = f"{stack.web_url}/api/v1/health"
    b_url = f"{stack.web_url}/api/v1/jobs/{job_b}"
    b_headers = {"Authorization": f"Api-Key {key_b}"}
    a_headers = {"Authorization": f"Api-Key {key_a}"}

    def sample() -> tuple[tuple[Sampler, Sampler], threading.Event]:
        stop = threading.Event()
        samplers = (Sampler(health_url, {}, 0.1, stop), Sampler(b_url, b_headers, 0.1, stop))
        for s in samplers:
            s.start()
        return samplers, stop

    samplers, stop = sample()
    time.sleep(args.quiet_seconds)
    stop.set()
    for s in samplers:
        s.join()
    quiet = {"health": _summary(samplers[0].latencies), "client_b_get": _summary(samplers[1].latencies)}

    state = {
        "stop": threading.Event(),
        "lock": threading.Lock(),
        "asked": set(),
        "cold": [],
        "warm": [],
        "refused": [],
        "statuses": {},
        "ignore_retry_after": args.ignore_retry_after,
    }
    flooders = [Flooder(stack.web_url, a_headers, jobs_a, i, state) for i in range(args.concurrency)]
    samplers, stop = sample()
    started = time.monotonic()
    for f in flooders:
        f.start()
    time.sleep(args.seconds)
    state["stop"].set()
    stop.set()
    for t in [*flooders, *samplers]:
        t.join(130)
    elapsed = time.monotonic() - started
    answered = sum(state["statuses"].values())
    return {
        "quiet": quiet,
        "flood": {
            "health": _summary(samplers[0].latencies),
            "client_b_get": _summary(samplers[1].latencies),
            "client_b_statuses": {str(k): v for k, v in samplers[1].statuses.items()},
            "health_statuses": {str(k): v for k, v in samplers[0].statuses.items()},
            "sr_cold": _summary(state["cold"]),
            "sr_warm": _summary(state["warm"]),
            "sr_429": _summary(state["refused"]),
            "sr_statuses": {str(k): v for k, v in state["statuses"].items()},
            "sr_requests_per_s": round(answered / elapsed, 1),
            "sr_200_per_s": round(state["statuses"].get(200, 0) / elapsed, 1),
        },
    }


def _table(result: dict) -> str:
    rows = [
        ("health, quiet", result["quiet"]["health"]),
        ("B's GET, quiet", result["quiet"]["client_b_get"]),
        ("health, flood", result["flood"]["health"]),
        ("B's GET, flood", result["flood"]["client_b_get"]),
        ("A's sr.dcm cold", result["flood"]["sr_cold"]),
        ("A's sr.dcm warm", result["flood"]["sr_warm"]),
        ("A's sr.dcm 429", result["flood"]["sr_429"]),
    ]
    lines = [f"{'':18} {'n':>6} {'median ms':>10} {'p95 ms':>10} {'max ms':>10}"]
    for name, s in rows:
        if not s.get("n"):
            lines.append(f"{name:18} {0:>6}")
            continue
        lines.append(f"{name:18} {s['n']:>6} {s['median_ms']:>10} {s['p95_ms']:>10} {s['max_ms']:>10}")
    flood = result["flood"]
    lines.append(
        f"sr.dcm statuses {flood['sr_statuses']}  ({flood['sr_requests_per_s']} answers/s, "
        f"{flood['sr_200_per_s']} x 200/s); B's GET statuses {flood['client_b_statuses']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the flood lasts")
    parser.add_argument("--quiet-seconds", type=float, default=8.0, help="the baseline before it")
    parser.add_argument("--concurrency", type=int, default=16, help="client A's concurrent requests")
    parser.add_argument("--jobs", type=int, default=16, help="client A's succeeded jobs, asked in turn")
    parser.add_argument(
        "--web-workers", type=int, default=None, help="gunicorn workers (default: as deployed)"
    )
    parser.add_argument("--ignore-retry-after", action="store_true", help="resend at once after a 429")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cxrq-srflood-"))
    database = _create_database()
    redis_db = os.environ.get("CXRQ_SR_FLOOD_REDIS_DB", "11")
    stack = ProcessStack(
        workdir,
        {
            "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "CXRQ_CACHE_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "CXRQ_MEDIA_ROOT": str(workdir / "media"),
            "CXRQ_MODEL_FAKE": "1",
            "CXRQ_LOG_LEVEL": "WARNING",
            # The read rate would answer the flood 429 before any SR is built: off, to measure building.
            "CXRQ_UPLOAD_RATE": "",
            "CXRQ_READ_RATE": "",
            "CXRQ_MAX_QUEUE_DEPTH": "0",
            "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
        },
    )
    try:
        stack.migrate()
        key_a = stack.manage("create_client", "flood-a").stdout.strip().splitlines()[-1]
        key_b = stack.manage("create_client", "quiet-b").stdout.strip().splitlines()[-1]
        stack.start_web(**({"workers": args.web_workers} if args.web_workers else {}))
        stack.start_worker(concurrency=1)
        jobs_a = _jobs(stack, key_a, args.jobs, seed=1000)
        (job_b,) = _jobs(stack, key_b, 1, seed=9000)
        before = _machine()
        result = _measure(args, stack, key_a, key_b, jobs_a, job_b)
        result |= {
            "machine_before": before,
            "machine_after": _machine(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
        }
    finally:
        stack.stop_all()
        _drop_database(database)
    m = result["machine_before"]
    print(
        f"commit {result['commit']}  CPU {m['cpu']} x{m['nproc']}  loadavg {' '.join(m['loadavg'])} "
        f"(after: {' '.join(result['machine_after']['loadavg'])})"
    )
    print(_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
