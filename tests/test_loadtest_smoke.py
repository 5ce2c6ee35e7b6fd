"""The load test's smoke run: a few users for ~20 s on the real stack; any 5xx, timeout,
failed or lost job fails the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.factories import ROOT

pytestmark = pytest.mark.slow


def test_smoke_load_run_has_no_failures():
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    out = subprocess.run(
        [
            sys.executable,
            "loadtest/run",
            "--configs",
            "cxrq",
            "--users",
            "4",
            "--duration",
            "20",
            "--name",
            name,
            "--fail-on-error",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    results = ROOT / "loadtest" / "results" / name
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        summary = json.loads((results / "summary.json").read_text())[0]
        assert summary["failures_total"] == 0
        assert summary["cache_miss"]["e2e_ms"]["n"] > 5
        assert summary["cache_hit"]["e2e_ms"]["n"] > 0
        for artefact in ("locust_stats.csv", "locust.html", "samples.csv", "queue.csv", "timeline.png"):
            assert (results / "cxrq" / "4u" / artefact).exists(), artefact
        assert (results / "report.md").exists()
    finally:
        shutil.rmtree(results, ignore_errors=True)
