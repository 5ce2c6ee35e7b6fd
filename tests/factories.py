"""Helpers shared by tests: sample files, generated images, uploads through the API or the
intake service, and the one error-shape check. Jobs are made through services, never as rows."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from backend.clients import services as clients
from backend.clients.models import Client, Scope
from backend.jobs.model_identity import current_model_version
from backend.jobs.models import Job
from backend.jobs.services import claims, intake

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "cxr"
PNG_JPEG_SAMPLES = sorted(p.name for p in DATA.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def sample_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def png_bytes(size: tuple[int, int] = (256, 256), mode: str = "L", seed: int = 0) -> bytes:
    """A valid, unique PNG (a gradient plus a seed-dependent pixel)."""
    img = Image.linear_gradient("L").resize(size).convert(mode)
    img.putpixel((seed % size[0], (seed // size[0]) % size[1]), 255 if mode == "L" else (255,) * len(mode))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def white_png(size: int = 128) -> bytes:
    """An all-white image: the fake runtime's poison (worker/runtime/fake.py)."""
    buf = io.BytesIO()
    Image.new("L", (size, size), 255).save(buf, format="PNG")
    return buf.getvalue()


TEST_CLIENT = "hospital-a"


def client_and_key(name: str = TEST_CLIENT, scope: str = Scope.SUBMIT) -> tuple[Client, str]:
    """A client (made through the service on first use) and a key of this scope for it."""
    client = Client.objects.filter(name=name).first()
    if client is None:
        client, issued = clients.client_create(name=name, scope=scope)
        return client, issued.key
    return client, clients.api_key_create(client=client, name="tests", scope=scope).key


def default_client() -> Client:
    """The client the factories make jobs for (the one the `api` fixture is signed in as)."""
    return Client.objects.filter(name=TEST_CLIENT).first() or client_and_key()[0]


def authorization(key: str) -> dict[str, str]:
    return {"Authorization": f"Api-Key {key}"}


def post_image(api: APIClient, data: bytes, name: str = "image.png", fields: dict | None = None, **extra):
    """Upload through the API; `fields`: more form fields (priority, ...); `extra`: headers."""
    form = {"image": SimpleUploadedFile(name, data), **(fields or {})}
    return api.post("/api/v1/jobs", form, format="multipart", **extra)


def assert_error(response, status: int, code: str) -> dict:
    """The one error shape: {"error": {"code", "message", "details"}}, with this status and code."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def make_jobs(n: int, start: int = 0, client: Client | None = None) -> list[Job]:
    """n queued jobs of distinct generated PNGs, through the intake service (default: the test client)."""
    client = client or default_client()
    return [
        intake.job_create(client=client, upload=SimpleUploadedFile(f"{i}.png", png_bytes(seed=i))).job
        for i in range(start, start + n)
    ]


def claim(max_size: int, worker_id: str = "w1") -> claims.ClaimedBatch:
    return claims.job_claim_batch(
        worker_id=worker_id, model_version=current_model_version(), max_size=max_size
    )


def expire(batch: claims.ClaimedBatch, seconds_ago: float = 1.0) -> None:
    """Make a claimed batch's leases lapse, as if its worker had stopped renewing them."""
    Job.objects.filter(claim_token=batch.claim_token).update(
        lease_expires_at=timezone.now() - timedelta(seconds=seconds_ago)
    )


def poll_job(url: str, *, headers: dict[str, str], timeout: float = 120) -> dict:
    """GET a job's URL every 100 ms until it is succeeded or failed (tests against a live server)."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(url, headers=headers, timeout=5).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.1)
    raise TimeoutError(url)


def engine_config_of(env: dict[str, str]) -> dict:
    """The engine configuration a worker started with this environment would run (a fresh process)."""
    code = (
        "import dataclasses, json, django; django.setup(); "
        "from worker.runtime.tuned import engine_config; "
        "print(json.dumps(dataclasses.asdict(engine_config())))"
    )
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base | env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a real process (worker, web server) a test starts: the same
    database, broker, queue and media folder as the test itself."""
    db = settings.DATABASES["default"]
    env = os.environ.copy()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "backend.settings.test",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CXRQ_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
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


def phi_key() -> str:
    """A fresh CXRQ_PHI_KEY (32 random bytes, url-safe base64), which production settings require."""
    import base64
    import secrets

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
