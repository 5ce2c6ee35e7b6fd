"""Log written per request with a Host the server does not serve, production settings, for this
checkout's server and (with --old-root) another one, back to back.

    python tools/bad_host_log.py [--old-root /tmp/cxrq-old] [--requests 100]

--old-root is a checkout of an earlier commit (`git worktree add /tmp/cxrq-old <commit>`). Each
server is the production command line (backend/edge/server.py, one process) on DATABASE_URL /
CELERY_BROKER_URL (defaults: PostgreSQL's `postgres` database and Redis db 15 on 127.0.0.1; a bad
Host is refused before a view runs, so nothing is read or written there). The figures: bytes and
lines of log per refused request, and whether a traceback is in them. CPU, cores and load average
are printed with them.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(root: Path, n: int, workdir: Path) -> dict:
    port = _free_port()
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "backend.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "DJANGO_ALLOWED_HOSTS": "cxrq.example.org,127.0.0.1",
        "CXRQ_PUBLIC_URL": "https://cxrq.example.org",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        "CXRQ_MODEL_WEIGHTS_SHA256": "a" * 64,
        "CXRQ_PHI_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "CXRQ_VAR_DIR": str(workdir / f"var-{port}"),
        "PYTHONUNBUFFERED": "1",
    }
    log = workdir / f"web-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:backend.edge.server",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    argv += ["--workers", "1", "backend.asgi:application"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
                break
            except requests.RequestException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(log.read_text()[-2000:]) from None
                time.sleep(0.2)
        start = log.stat().st_size
        for _ in range(n):
            response = requests.get(
                f"http://127.0.0.1:{port}/api/v1/health", headers={"Host": "evil.example"}, timeout=10
            )
            assert response.status_code == 400, response.status_code
        # Each line is written before its response is sent; this only lets the file catch up.
        time.sleep(0.5)
        written = log.read_bytes()[start:]
    finally:
        proc.terminate()
        proc.wait(20)
    return {
        "bytes": len(written) / n,
        "lines": written.count(b"\n") / n,
        "traceback": b"Traceback" in written,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-root", type=Path)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    print(f"cpu: {_cpu()}, cores: {os.cpu_count()}, load: {os.getloadavg()}")
    roots = [("this checkout", ROOT)] + ([("old", args.old_root)] if args.old_root else [])
    with tempfile.TemporaryDirectory() as tmp:
        for name, root in roots:
            f = measure(root, args.requests, Path(tmp))
            print(
                f"{name}: {f['bytes']:.0f} bytes and {f['lines']:.1f} lines of log per bad-Host request, "
                f"traceback: {'yes' if f['traceback'] else 'no'}"
            )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
