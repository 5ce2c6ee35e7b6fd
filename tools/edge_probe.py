"""Attack a web server as issue #14 did and print the figures, for the old server and the new
one side by side in one run (`make edge-probe`):

- health latency while 150 connections trickle a request head, one byte a second;
- health latency while 20 connections stall halfway through a body;
- the server's RSS growth after it refused an honest 300 MB Content-Length and the client
  kept sending;
- 50 concurrent uploads: how many were answered, how many reset;
- 200 concurrent GETs of one job: p50 / p95.

Both servers run the same code on the same database (a fresh PostgreSQL database, or SQLite
when none answers) and the same settings; only the server command differs:
  old: gunicorn backend.wsgi:application --workers 2 --threads 4 --timeout 30 (issue #14's production)
  new: backend/edge/server.py (gunicorn + uvicorn workers), 2 workers
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.edge.server import server_argv  # noqa: E402

SERVERS = {
    "old (gunicorn gthread 2x4, WSGI)": lambda bind: [
        sys.executable,
        "-m",
        "gunicorn",
        "backend.wsgi:application",
        "--bind",
        bind,
        "--workers",
        "2",
        "--threads",
        "4",
        "--timeout",
        "30",
    ],
    "new (gunicorn + uvicorn workers, edge)": lambda bind: server_argv(bind, workers=2),
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(seed: int) -> bytes:
    img = Image.effect_noise((256, 256), 40 + seed % 50).convert("L")
    img.putpixel((0, 0), seed % 256)
    img.putpixel((1, 0), seed // 256 % 256)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


class Target:
    def __init__(self, name: str, argv, env: dict[str, str], workdir: Path):
        self.name, self.port = name, _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (workdir / f"web-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            argv(f"127.0.0.1:{self.port}"), cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.url}/api/v1/health", timeout=2)
                return
            time.sleep(0.3)
        raise TimeoutError(name)

    def rss(self) -> int:
        parent = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _health(url: str, n: int, timeout: float = 5.0) -> dict:
    times, failed = [], 0
    for _ in range(n):
        t0 = time.monotonic()
        try:
            requests.get(f"{url}/api/v1/health", timeout=timeout)
            times.append(time.monotonic() - t0)
        except requests.RequestException:
            failed += 1
        time.sleep(0.1)
    return {"answered": len(times), "of": n, "max_s": round(max(times), 3) if times else None}


def slow_heads(t: Target, n: int = 150) -> dict:
    socks, stop = [], threading.Event()
    for _ in range(n):
        with contextlib.suppress(OSError):
            s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
            socks.append(s)

    def trickle() -> None:
        head = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 200
        for i in range(len(head)):
            if stop.is_set():
                return
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(head[i : i + 1])
            time.sleep(1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    time.sleep(1.5)
    result = _health(t.url, 10)
    stop.set()
    for s in socks:
        s.close()
    return result


def stalled_bodies(t: Target, key: str, n: int = 20) -> dict:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
        s.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key "
            + key.encode()
            + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n"
        )
        socks.append(s)
    time.sleep(1)
    result = _health(t.url, 10)
    for s in socks:
        s.close()
    return result


def huge_body(t: Target, key: str) -> dict:
    before = t.rss()
    s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
    s.sendall(
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key " + key.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 300000000\r\n\r\n"
    )
    sent, t0 = 0, time.monotonic()
    with contextlib.suppress(OSError):
        while sent < 300_000_000 and time.monotonic() - t0 < 30:
            s.sendall(b"\0" * (1 << 20))
            sent += 1 << 20
    time.sleep(2)
    growth = t.rss() - before
    s.close()
    return {"sent_mb": sent >> 20, "rss_growth_mb": round(growth / 2**20, 1)}


def burst_uploads(t: Target, key: str, n: int = 50) -> dict:
    def upload(i: int) -> str:
        try:
            r = requests.post(
                f"{t.url}/api/v1/jobs",
                files={"image": (f"{i}.png", _png(i + 7000))},
                headers={"Authorization": f"Api-Key {key}"},
                timeout=60,
            )
            return str(r.status_code)
        except requests.ConnectionError:
            return "reset"
        except requests.Timeout:
            return "timeout"

    with cf.ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(upload, range(n)))
    return {o: outcomes.count(o) for o in sorted(set(outcomes))}


def burst_reads(t: Target, key: str, n: int = 200) -> dict:
    job = requests.post(
        f"{t.url}/api/v1/jobs",
        files={"image": ("r.png", _png(99_000 + t.port))},
        headers={"Authorization": f"Api-Key {key}"},
        timeout=30,
    ).json()

    def get(_: int) -> float | None:
        t0 = time.monotonic()
        try:
            requests.get(
                job["url"].replace(job["url"].split("/api/")[0], t.url),
                headers={"Authorization": f"Api-Key {key}"},
                timeout=60,
            )
            return time.monotonic() - t0
        except requests.RequestException:
            return None

    with cf.ThreadPoolExecutor(n) as pool:
        times = [x for x in pool.map(get, range(n)) if x is not None]
    times.sort()
    return {
        "answered": len(times),
        "p50_s": round(statistics.median(times), 3),
        "p95_s": round(times[int(len(times) * 0.95) - 1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cxrq-edge-"))
    db = f"cxrq_edge_{uuid.uuid4().hex[:8]}"
    pg = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"create database {db}"], capture_output=True
    )
    database_url = (
        f"postgres://postgres@127.0.0.1:5432/{db}"
        if pg.returncode == 0
        else f"sqlite:///{workdir}/db.sqlite3"
    )
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "filesystem://",
        "CXRQ_BROKER_DIR": str(workdir / "broker"),
        "CXRQ_MEDIA_ROOT": str(workdir / "media"),
        "CXRQ_UPLOAD_RATE": "",
        "CXRQ_READ_RATE": "",
        "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
        "CXRQ_MAX_QUEUE_DEPTH": "0",
    }

    def manage(*a: str) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *a], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""

    manage("migrate", "--noinput")
    key = manage("create_client", "edge-probe")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    print(f"CPU: {cpu}, {os.cpu_count()} cores; database: {database_url.split(':')[0]}")
    figures = {}
    try:
        for name, argv in SERVERS.items():
            t = Target(name, argv, env, workdir)
            try:
                figures[name] = {
                    "health under 150 slow heads": slow_heads(t),
                    "health under 20 stalled bodies": stalled_bodies(t, key),
                    "300 MB Content-Length refused, client keeps sending": huge_body(t, key),
                    "50 concurrent uploads": burst_uploads(t, key),
                    "200 concurrent GETs of one job": burst_reads(t, key),
                }
            finally:
                t.stop()
            print(f"\n{name}")
            for case, result in figures[name].items():
                print(f"  {case}: {json.dumps(result)}")
    finally:
        if pg.returncode == 0:
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"drop database {db}"],
                capture_output=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
