"""Shared fixtures. Objects are built through services and the HTTP API, not by hand-written rows."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from worker.command import celery_worker_argv

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "cxr"
PNG_JPEG_SAMPLES = sorted(p.name for p in DATA.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def pytest_report_header(config) -> list[str]:
    return [
        f"cxrq database: {settings.TEST_DATABASE_SOURCE}",
        f"cxrq broker:   {settings.TEST_BROKER_SOURCE}",
    ]


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_line(
        f"cxrq ran against database: {settings.TEST_DATABASE_SOURCE}; broker: {settings.TEST_BROKER_SOURCE}"
    )


def poll_job(url: str, timeout: float = 120) -> dict:
    """GET a job's URL every 100 ms until it is succeeded or failed."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(url, timeout=5).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.1)
    raise TimeoutError(url)


def sample_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def png_bytes(size: tuple[int, int] = (256, 256), mode: str = "L", seed: int = 0) -> bytes:
    """A valid, unique PNG (a gradient plus a seed-dependent pixel)."""
    img = Image.linear_gradient("L").resize(size).convert(mode)
    img.putpixel((seed % size[0], (seed // size[0]) % size[1]), 255 if mode == "L" else (255,) * len(mode))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


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
def api() -> APIClient:
    return APIClient()


def post_image(api: APIClient, data: bytes, name: str = "image.png", **extra):
    return api.post("/api/v1/jobs", {"image": SimpleUploadedFile(name, data)}, format="multipart", **extra)


@pytest.fixture(scope="session")
def runtime():
    """The model runtime (fallback weights), loaded once for the session."""
    from worker.runtime.model import load_runtime

    return load_runtime()


@pytest.fixture
def processor(runtime):
    """An in-process batch processor sharing the session's runtime."""
    from worker.batching import Processor

    proc = Processor()
    proc.runtime = runtime
    yield proc
    proc._stop.set()


# --- real processes ------------------------------------------------------------


def _worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    db = settings.DATABASES["default"]
    env = os.environ.copy()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "backend.settings.test",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CXRQ_QUEUE": settings.CELERY_QUEUE,
            "CXRQ_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "CXRQ_MODEL_CACHE_DIR": str(settings.MODEL_CACHE_DIR),
            "CXRQ_WORKER_HEARTBEAT_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    env.update(extra or {})
    return env


class WorkerProcess:
    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None, concurrency: int = 1):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            celery_worker_argv(name=f"test-{os.getpid()}-{time.monotonic_ns()}", concurrency=concurrency),
            cwd=ROOT,
            env=_worker_env(extra_env),
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
            if "event=model_loaded" in self.log and "ready" in self.log:
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


@pytest.fixture(scope="session", autouse=True)
def _cleanup_run_dir():
    yield
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        for key in client.scan_iter(f"{settings.CELERY_QUEUE}*"):
            client.delete(key)
    shutil.rmtree(settings.TEST_RUN_DIR, ignore_errors=True)
