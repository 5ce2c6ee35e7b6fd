"""Shared fixtures. Objects are built through services and the HTTP API, not by hand-written rows."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from backend.clients.models import Scope
from tests.factories import ROOT, client_and_key, process_env
from worker.command import celery_worker_argv


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Rate-limit counters live in Django's cache: no test inherits another's."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _no_read_events_from_earlier_tests() -> None:
    """Audit reads are buffered per process (backend/audit/services.py): drop what an earlier test
    left, or its reads would be written into this test's database at the next flush."""
    from backend.audit.services import drop_buffered_reads

    drop_buffered_reads()


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def media_files(_isolated_media) -> Callable[[], list[Path]]:
    def files() -> list[Path]:
        root = Path(_isolated_media)
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []

    return files


@pytest.fixture
def admin_client(client):
    """Django's test client signed in as a superuser."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("admin", "a@example.org", "pw-for-tests-only")
    client.force_login(user)
    return client


@pytest.fixture
def api_key(db) -> str:
    """A submit key of the test client (tests/factories.py TEST_CLIENT)."""
    return client_and_key()[1]


@pytest.fixture
def api(api_key) -> APIClient:
    """The API as the test client, with a submit key."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    return client


@pytest.fixture
def anonymous_api() -> APIClient:
    return APIClient()


@pytest.fixture
def operator_api(db) -> APIClient:
    """The API with an operator key: health and queue figures, no job data."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_and_key(scope=Scope.OPERATOR)[1]}")
    return client


@pytest.fixture(scope="session")
def runtime():
    """The model runtime (fallback weights), loaded once for the session."""
    from worker.runtime.model import load_runtime

    return load_runtime()


@pytest.fixture(scope="session")
def fake_runtime():
    """The test stand-in: the real preprocessing, arithmetic instead of DenseNet121."""
    from worker.runtime.fake import load_fake_runtime

    return load_fake_runtime()


def _worker_process(runtime) -> Iterator:
    from worker.lifecycle import WorkerProcess

    process = WorkerProcess(runtime=runtime)
    yield process
    process.stop(timeout=10)


@pytest.fixture
def worker(fake_runtime):
    """An in-process worker on the fake runtime (API, admin and job-state tests). Its engine
    configuration is read when it first starts, so a test may change settings before."""
    yield from _worker_process(fake_runtime)


@pytest.fixture
def model_worker(runtime):
    """An in-process worker on the real model (fallback weights), for tests of what it computes."""
    yield from _worker_process(runtime)


# --- real processes ------------------------------------------------------------


class WorkerProcess:
    """A real Celery worker: the inference worker, or (argv given) the dispatcher."""

    ready_marker = "event=worker_started"

    def __init__(
        self,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        concurrency: int = 1,
        argv: list[str] | None = None,
    ):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        if argv is not None:
            self.ready_marker = "ready"
        self.proc = subprocess.Popen(
            argv
            or celery_worker_argv(name=f"test-{os.getpid()}-{time.monotonic_ns()}", concurrency=concurrency),
            cwd=ROOT,
            env=process_env(extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_marker in self.log and "ready" in self.log:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(extra_env: dict[str, str] | None = None, concurrency: int = 1) -> WorkerProcess:
        w = WorkerProcess(tmp_path / f"worker-{len(workers)}.log", extra_env, concurrency)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def start_dispatcher(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """The real dispatcher (`manage.py run_dispatcher`: webhooks, sweep, purge) on the test's queue."""
    from backend.webhooks.management.commands.run_dispatcher import dispatcher_argv

    started: list[WorkerProcess] = []

    def start(extra_env: dict[str, str] | None = None, beat: bool = False) -> WorkerProcess:
        # Its settings (queue, timeouts) come from the environment it is started with.
        env = {"DJANGO_SETTINGS_MODULE": "backend.settings.test", **(extra_env or {})}
        d = WorkerProcess(tmp_path / f"dispatcher-{len(started)}.log", env, argv=dispatcher_argv(beat=beat))
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


class WebServer:
    """The real web server (gunicorn + uvicorn workers, backend/edge/server.py) on a free port."""

    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None, workers: int = 1):
        import socket

        from backend.edge.server import server_argv

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            server_argv(f"127.0.0.1:{self.port}", workers=workers),
            cwd=ROOT,
            env=process_env(extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/api/v1/health", timeout=2)
                return
            except (requests.ConnectionError, requests.Timeout) as exc:  # accepted before a worker booted
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"web server exited with {self.proc.returncode}:\n{self.log[-4000:]}"
                    ) from exc
                time.sleep(0.2)
        raise TimeoutError(f"web server not ready after {timeout}s:\n{self.log[-4000:]}")

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_web(tmp_path) -> Iterator[Callable[..., WebServer]]:
    servers: list[WebServer] = []

    def start(extra_env: dict[str, str] | None = None, workers: int = 1) -> WebServer:
        server = WebServer(tmp_path / f"web-{len(servers)}.log", extra_env, workers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def _cleanup_run_dir():
    yield
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.WEBHOOK_QUEUE):
            for key in client.scan_iter(f"{queue}*"):
                client.delete(key)
    shutil.rmtree(settings.TEST_RUN_DIR, ignore_errors=True)
