"""Start and stop the real stack as processes: migrate, the web server (gunicorn + uvicorn workers), Celery workers.

Used by `loadtest/run` and by the reliability tests (tests/reliability/harness.py).
Everything it starts listens on 127.0.0.1 and is stopped by `stop_all()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from backend.edge.server import server_argv
from worker.command import celery_worker_argv

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class ProcessStack:
    """Web and workers as subprocesses, sharing one environment (database, broker, media)."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = os.environ.copy() | {"PYTHONUNBUFFERED": "1"} | env
        self.env.setdefault("CXRQ_QUEUE", f"cxrq-{uuid.uuid4().hex[:8]}")
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.web_url = ""
        self.api_key = ""
        self.operator_key = ""

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and out.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr[-3000:]}")
        return out

    def migrate(self) -> None:
        self.manage("migrate", "--noinput")

    def create_client(self, name: str) -> None:
        """A client for this stack's requests, with a submit key and an operator key (the health
        figures). manage.py prints each key alone on its last line."""
        self.api_key = self.manage("create_client", name).stdout.strip().splitlines()[-1]
        added = self.manage("client_keys", "add", name, "--name", "operator", "--scope", "operator")
        self.operator_key = added.stdout.strip().splitlines()[-1]

    def headers(self, *, operator: bool = False) -> dict[str, str]:
        return {"Authorization": f"Api-Key {self.operator_key if operator else self.api_key}"}

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.workdir / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self.env | (env or {}),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.log_path = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def start_web(self, *, workers: int = 2, threads: int = 4, server: str = "edge") -> str:
        """The server `make run` and production use (backend/edge/server.py: threads unused, each
        request's sync view gets a thread of its own), or, to compare against it, the WSGI
        server it replaced (`server="wsgi"`: gunicorn gthread, `threads` per process)."""
        port = free_port()
        bind = f"127.0.0.1:{port}"
        if server == "wsgi":
            argv = [sys.executable, "-m", "gunicorn", "backend.wsgi:application", "--bind", bind]
            argv += ["--workers", str(workers), "--threads", str(threads), "--timeout", "30"]
        else:
            argv = server_argv(bind, workers=workers)
        self.spawn("web", argv)
        self.web_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: port_open(port), 60, what="web")
        return self.web_url

    def start_worker(
        self, name: str = "worker", concurrency: int | None = None, ready_timeout: float = 180, **env: str
    ) -> subprocess.Popen:
        proc = self.spawn(
            name,
            celery_worker_argv(name=f"{name}-{uuid.uuid4().hex[:6]}", concurrency=concurrency),
            env,
        )
        log = Path(proc.log_path)
        wait_for(
            lambda: (
                (b"ready" in log.read_bytes() and b"event=worker_started" in log.read_bytes())
                or proc.poll() is not None
            ),
            ready_timeout,
            what=f"{name} ready",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log.read_text(errors='replace')[-3000:]}")
        return proc

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far, by part: `web`, `worker` (each process with its live children,
        and the children it has reaped), and the machine's `database` and `broker` servers (all
        of PostgreSQL's and Redis's processes: on a shared machine they include others' use)."""
        import psutil

        totals: dict[str, float] = {}

        def add(part: str, proc: psutil.Process, reaped: bool) -> None:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                used = t.user + t.system + ((t.children_user + t.children_system) if reaped else 0.0)
                totals[part] = totals.get(part, 0.0) + used

        for popen in self.procs:
            if popen.poll() is not None:
                continue
            part = "web" if Path(popen.log_path).name.startswith("web") else "worker"
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(popen.pid)
                add(part, top, reaped=True)
                for child in top.children(recursive=True):
                    add(part, child, reaped=False)
        for proc in psutil.process_iter(["name"]):
            name = proc.info["name"] or ""
            if name.startswith("postgres"):
                add("database", proc, reaped=False)
            elif name.startswith("redis-server"):
                add("broker", proc, reaped=False)
        return totals

    @staticmethod
    def log_of(proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def signal(self, proc: subprocess.Popen, sig: int, group: bool = True) -> None:
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
