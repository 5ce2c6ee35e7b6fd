"""Production refuses to start without a key for the return path's PHI."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from backend.core import phi
from tests.factories import ROOT


def _check(tmp_path, **extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "DJANGO_SETTINGS_MODULE": "backend.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "cxrq.example.org",
        "CXRQ_PUBLIC_URL": "https://cxrq.example.org",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CXRQ_MODEL_WEIGHTS_SHA256": "a" * 64,
        "CXRQ_VAR_DIR": str(tmp_path / "var"),
        **extra,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_without_a_phi_key_does_not_start(tmp_path):
    out = _check(tmp_path)
    assert out.returncode != 0
    assert "set CXRQ_PHI_KEY" in out.stderr


def test_production_refuses_a_malformed_phi_key(tmp_path):
    out = _check(tmp_path, CXRQ_PHI_KEY="too-short")
    assert out.returncode != 0
    assert "32 bytes" in out.stderr


def test_production_starts_with_a_key_and_a_rotation_list(tmp_path):
    out = _check(tmp_path, CXRQ_PHI_KEY=f"{phi.new_key()},{phi.new_key()}")
    assert out.returncode == 0, out.stderr[-2000:]
