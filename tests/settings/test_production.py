"""Production settings: `manage.py check --deploy` reports nothing that applies."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from tests.factories import ROOT, phi_key


def test_check_deploy_is_clean_with_production_settings(tmp_path):
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
        "CXRQ_PHI_KEY": phi_key(),
        "CXRQ_VAR_DIR": str(tmp_path / "var"),
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues" in out.stdout
