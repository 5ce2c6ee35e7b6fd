"""Production's metrics and log settings: JSON lines, the token only, a real secret."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from tests.factories import ROOT, phi_key

_PRINT = (
    "from django.conf import settings as s; import json; print(json.dumps([s.LOG_FORMAT, "
    "s.LOGGING['handlers']['console']['formatter'], s.METRICS_ALLOW_LOOPBACK, s.WORKER_METRICS_PORT, "
    "s.WORKER_METRICS_ADDRESS, 'metrics' in ' '.join(s.SECURE_REDIRECT_EXEMPT)]))"
)


def _settings(module: str, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "DJANGO_SETTINGS_MODULE": module,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "CXRQ_PUBLIC_URL": "https://cxrq.example.org",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CXRQ_MODEL_WEIGHTS_SHA256": "a" * 64,
        "CXRQ_PHI_KEY": phi_key(),
        "CXRQ_VAR_DIR": str(tmp_path / "var"),
        **extra,
    }
    code = f"import os, django; django.setup(); {_PRINT}"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_production_writes_json_and_opens_metrics_to_the_token_only(tmp_path):
    out = _settings("backend.settings.production", tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == ["json", "json", False, 9808, "0.0.0.0", True]


def test_development_writes_text_and_serves_no_worker_port_unless_asked(tmp_path):
    out = _settings("backend.settings.dev", tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])[:5] == ["text", "text", True, 0, "127.0.0.1"]


def test_production_refuses_a_short_metrics_token_and_an_unknown_log_format(tmp_path):
    out = _settings("backend.settings.production", tmp_path, CXRQ_METRICS_TOKEN="short")
    assert out.returncode != 0 and "CXRQ_METRICS_TOKEN" in out.stderr
    out = _settings("backend.settings.dev", tmp_path, CXRQ_LOG_FORMAT="xml")
    assert out.returncode != 0 and "CXRQ_LOG_FORMAT" in out.stderr
