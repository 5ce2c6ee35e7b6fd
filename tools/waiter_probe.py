"""How many long-poll waiters one web process holds, and what they cost (`make waiter-probe`).

One web process (backend/edge/server.py, one worker, CXRQ_WEB_THREADS Django threads) on a fresh
PostgreSQL database with Redis for the job-ended events (SQLite and no events when neither
answers). For each count N: N clients each send `GET /api/v1/jobs/{id}?wait=120` for one of ten
queued jobs and stay waiting; then, while they wait, the probe measures

- the server's RSS and CPU time spent per second while they only wait (idle cost),
- health's latency (p50 / max of 20 requests) and an upload's, with N waiters held,
- the time from cancelling the ten jobs (POST /cancel, a real move to an end) to the last of
  the N waiters answered, and how many were answered 200 with the job ended.

The clients are raw asyncio sockets in this process (cheap: the probe shares the machine's
cores with the server). Prints one line per N and the CPU, and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.edge.server import server_argv  # noqa: E402
from tools.edge_probe import _png, _port  # noqa: E402

JOBS = 10
# Long enough that no wait runs out during the measurements, even at thousands of waiters.
WAIT_S = 120


async def _waiter(port: int, path: str, key: str, opened: list) -> tuple[int, float, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key {key}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    opened.append(1)
    data = await reader.read()
    answered = time.monotonic()
    writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, answered, data


def _cpu_seconds(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _latency(url: str, n: int = 20, **kwargs) -> dict:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        requests.get(url, timeout=10, **kwargs)
        times.append(time.monotonic() - t0)
    return {"p50_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1)}


async def _one_round(n: int, port: int, key: str, base: str, server: psutil.Process) -> dict:
    headers = {"Authorization": f"Api-Key {key}"}
    jobs = []
    for i in range(JOBS):
        r = requests.post(
            f"{base}/api/v1/jobs", files={"image": ("p.png", _png(i + n * 100))}, headers=headers, timeout=30
        )
        assert r.status_code == 202, r.text
        jobs.append(r.json()["id"])
    rss_before = _rss(server)
    opened: list = []
    tasks = [
        asyncio.create_task(_waiter(port, f"/api/v1/jobs/{jobs[i % JOBS]}?wait={WAIT_S}", key, opened))
        for i in range(n)
    ]
    deadline = time.monotonic() + 20
    while len(opened) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    # Every waiter's first pass (a Django request each) takes a while at large N: wait until the
    # server has gone quiet (a second under a tenth of a core), at most 60 s, then measure.
    settle_t0 = time.monotonic()
    while time.monotonic() - settle_t0 < 60:
        c0 = _cpu_seconds(server)
        await asyncio.sleep(1.0)
        if _cpu_seconds(server) - c0 < 0.1:
            break
    settled_s = time.monotonic() - settle_t0
    early = sum(t.done() for t in tasks)
    cpu0, t0 = _cpu_seconds(server), time.monotonic()
    await asyncio.sleep(5.0)
    idle_cpu = (_cpu_seconds(server) - cpu0) / (time.monotonic() - t0)
    rss_waiting = _rss(server)
    loop = asyncio.get_running_loop()
    health = await loop.run_in_executor(None, lambda: _latency(f"{base}/api/v1/health"))
    upload_t0 = time.monotonic()
    up = await loop.run_in_executor(
        None,
        lambda: requests.post(
            f"{base}/api/v1/jobs", files={"image": ("u.png", _png(99_999 + n))}, headers=headers, timeout=30
        ),
    )
    upload_ms = (time.monotonic() - upload_t0) * 1000
    ended_at = time.monotonic()
    for job_id in jobs:
        await loop.run_in_executor(
            None,
            lambda j=job_id: requests.post(f"{base}/api/v1/jobs/{j}/cancel", headers=headers, timeout=30),
        )
    results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    answered_ended = sum(1 for status, _, body in ok if status == 200 and b'"cancelled"' in body)
    last = max((t for _, t, _ in ok), default=ended_at)
    return {
        "waiters": n,
        "connected": len(opened),
        "answered_before_the_end": early,
        "first_passes_done_after_s": round(settled_s, 1),
        "idle_cpu_cores": round(idle_cpu, 3),
        "rss_per_waiter_kb": round((rss_waiting - rss_before) / max(n, 1) / 1024, 2),
        "health_while_waiting": health,
        "upload_while_waiting_ms": round(upload_ms, 1),
        "upload_status": up.status_code,
        "answered_ended": answered_ended,
        "errors": len(results) - len(ok) + sum(1 for status, _, _ in ok if status != 200),
        "last_answer_after_cancels_s": round(last - ended_at, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waiters", default="250,1000,2000", help="comma-separated counts")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    counts = [int(c) for c in args.waiters.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(counts) + 256)), hard))
    workdir = Path(tempfile.mkdtemp(prefix="cxrq-waiters-"))
    db = f"cxrq_waiters_{uuid.uuid4().hex[:8]}"
    pg = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"create database {db}"], capture_output=True
    )
    redis_ok = subprocess.run(["redis-cli", "-n", "9", "ping"], capture_output=True).returncode == 0
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db}"
        if pg.returncode == 0
        else f"sqlite:///{workdir}/db.sqlite3",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/9" if redis_ok else "filesystem://",
        "CXRQ_QUEUE": f"waiters-{uuid.uuid4().hex[:6]}",
        "CXRQ_BROKER_DIR": str(workdir / "broker"),
        "CXRQ_MEDIA_ROOT": str(workdir / "media"),
        "CXRQ_UPLOAD_RATE": "",
        "CXRQ_READ_RATE": "",
        "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
        "CXRQ_MAX_QUEUE_DEPTH": "0",
        "CXRQ_EDGE_MAX_CONNECTIONS": str(max(counts) + 100),
        "CXRQ_LOG_LEVEL": "WARNING",
        "CXRQ_LONG_POLL_MAX_SECONDS": str(WAIT_S),
    }

    def manage(*a: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *a], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""

    manage("migrate", "--noinput")
    key = manage("create_client", "waiter-probe")
    port = _port()
    base = f"http://127.0.0.1:{port}"
    log = (workdir / "web.log").open("wb")
    proc = subprocess.Popen(
        server_argv(f"127.0.0.1:{port}", workers=1), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    figures = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/api/v1/health", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, (workdir / "web.log").read_text()
                time.sleep(0.2)
        events = "redis" if redis_ok else "none (1 s polling)"
        print(
            f"CPU: {cpu}, {os.cpu_count()} cores; database: {env['DATABASE_URL'].split(':')[0]}; events: {events}"
        )
        server = psutil.Process(proc.pid)
        for n in counts:
            result = asyncio.run(_one_round(n, port, key, base, server))
            figures.append(result)
            print(json.dumps(result))
    finally:
        proc.terminate()
        proc.wait(20)
        if pg.returncode == 0:
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"drop database {db}"],
                capture_output=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
