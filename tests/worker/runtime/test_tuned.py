"""The tuned file is what a worker's engine configuration defaults to; an environment variable
still wins; a broken file falls back to the built-in defaults; the committed file is a complete
tuner output. Each configuration is computed in a fresh process, as a worker would at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.factories import ROOT, engine_config_of


def test_the_engine_defaults_to_the_tuned_file_and_env_wins(tmp_path):
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
    got = engine_config_of({"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var")})
    assert got == config | {"precision": "fp32"}
    env_wins = engine_config_of(
        {"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var"), "CXRQ_BATCH_MAX_SIZE": "3"}
    )
    assert env_wins["batch_max_size"] == 3 and env_wins["preprocess_workers"] == 2
    zero_wait = engine_config_of(
        {
            "CXRQ_TUNED_CONFIG": str(tuned),
            "CXRQ_VAR_DIR": str(tmp_path / "var"),
            "CXRQ_BATCH_MAX_WAIT_MS": "0",
        }
    )
    assert zero_wait["batch_max_wait_ms"] == 0  # zero is a value, not "unset"

    tuned.write_text("{not json")
    broken = engine_config_of({"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var")})
    assert broken["batch_max_size"] == 8 and broken["backend"] == "onnxruntime"  # built-in defaults


def test_settings_never_read_the_tuned_file(tmp_path):
    """Settings hold only what the environment says; the tuned value is the worker's to apply."""
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"config": {"batch_max_size": 6}}))
    code = "import django; django.setup(); from django.conf import settings; print(settings.BATCH_MAX_SIZE)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
            "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
        }
        | {"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip().splitlines()[-1] == "None", out.stderr


def test_the_committed_tuned_file_is_a_tuner_output_that_workers_use(tmp_path):
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
    got = engine_config_of(
        {"CXRQ_VAR_DIR": str(tmp_path / "var")}
    )  # no CXRQ_TUNED_CONFIG: the committed file
    assert got == tuned["config"] | {"precision": "fp32"}
    fast = engine_config_of({"CXRQ_VAR_DIR": str(tmp_path / "var"), "CXRQ_PRECISION": "fast"})
    assert fast == tuned["config_fast"] | {"precision": "fast"}
