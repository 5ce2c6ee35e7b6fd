"""The tuned file is what settings default to; an environment variable still wins; the committed
file is a complete tuner output; the tuner writes a file that settings read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

KEYS = ("BATCH_MAX_SIZE", "BATCH_MAX_WAIT_MS", "TORCH_THREADS", "PREPROCESS_WORKERS", "WORKER_CONCURRENCY")
KEYS += ("INFERENCE_BACKEND",)


def _settings(env: dict[str, str]) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{k: getattr(settings, k) for k in {KEYS!r}}}))"
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


def test_settings_default_to_the_tuned_file_and_env_wins(tmp_path):
    tuned = tmp_path / "tuned.json"
    config = {
        "backend": "openvino",
        "threads": 1,
        "preprocess_workers": 2,
        "batch_max_size": 6,
        "batch_max_wait_ms": 7,
        "worker_concurrency": 3,
    }
    tuned.write_text(json.dumps({"config": config}))
    got = _settings({"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var")})
    assert got == {
        "BATCH_MAX_SIZE": 6,
        "BATCH_MAX_WAIT_MS": 7,
        "TORCH_THREADS": 1,
        "PREPROCESS_WORKERS": 2,
        "WORKER_CONCURRENCY": 3,
        "INFERENCE_BACKEND": "openvino",
    }
    env_wins = _settings(
        {"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var"), "CXRQ_BATCH_MAX_SIZE": "3"}
    )
    assert env_wins["BATCH_MAX_SIZE"] == 3 and env_wins["PREPROCESS_WORKERS"] == 2

    tuned.write_text("{not json")
    broken = _settings({"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var")})
    assert broken["BATCH_MAX_SIZE"] == 8 and broken["INFERENCE_BACKEND"] == "onnxruntime"  # built-in defaults


def test_the_committed_tuned_file_is_a_tuner_output_that_settings_use(tmp_path):
    committed = ROOT / "worker" / "runtime" / "tuned.json"
    tuned = json.loads(committed.read_text())
    assert set(tuned["config"]) == {
        "backend",
        "threads",
        "preprocess_workers",
        "batch_max_size",
        "batch_max_wait_ms",
        "worker_concurrency",
    }
    assert tuned["measured"]["p95_batch_ms"] <= tuned["budget_ms"]
    assert tuned["sweep"] and tuned["machine"]["cores"]
    got = _settings({"CXRQ_VAR_DIR": str(tmp_path / "var")})  # no CXRQ_TUNED_CONFIG: the committed file
    assert got["BATCH_MAX_SIZE"] == tuned["config"]["batch_max_size"]
    assert got["PREPROCESS_WORKERS"] == tuned["config"]["preprocess_workers"]
    assert got["INFERENCE_BACKEND"] == tuned["config"]["backend"]


@pytest.mark.slow
def test_the_tuner_writes_a_file_settings_read(tmp_path):
    out = tmp_path / "tuned.json"
    run = subprocess.run(
        [sys.executable, "-m", "worker.tune", "--quick", "--seconds", "0.3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "CXRQ_VAR_DIR": str(ROOT / "var")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "best within p95" in run.stdout
    tuned = json.loads(out.read_text())
    assert tuned["config"]["batch_max_size"] in (1, 4) and tuned["config"]["batch_max_wait_ms"] in (0, 20)
    assert (
        _settings({"CXRQ_TUNED_CONFIG": str(out), "CXRQ_VAR_DIR": str(tmp_path / "var")})["BATCH_MAX_SIZE"]
        == (tuned["config"]["batch_max_size"])
    )
