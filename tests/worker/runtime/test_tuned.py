"""The tuned file's entry for this CPU is what a worker's engine configuration defaults to; an
entry for another CPU is never applied; an environment variable still wins; a broken file falls
back to the built-in defaults; the committed file is a complete tuner output. Each configuration is
computed in a fresh process, as a worker would at start, with the CPU faked through CXRQ_CPUINFO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.factories import ROOT, engine_config_of
from worker.runtime.cpu import parse_cpuinfo

# Two CPUs of the same 2-core class that want different settings (issue #17).
AVX2_HOST = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
BF16_HOST = (
    "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16\n"
)


def _keyed(tmp_path: Path, cpuinfo: str, entry: dict) -> dict[str, str]:
    """A tuned file holding `entry` for the CPU `cpuinfo` describes; the environment of a worker
    that reads it (its CPU still to choose: CXRQ_CPUINFO)."""
    tuned = tmp_path / "tuned.json"
    key = parse_cpuinfo(cpuinfo, cores=os.cpu_count() or 1).key  # as the worker process counts them
    tuned.write_text(json.dumps({"format": 2, "hosts": {key: entry}}))
    return {"CXRQ_TUNED_CONFIG": str(tuned), "CXRQ_VAR_DIR": str(tmp_path / "var")}


def _cpu(tmp_path: Path, cpuinfo: str) -> dict[str, str]:
    path = tmp_path / f"cpuinfo-{abs(hash(cpuinfo))}"
    path.write_text(cpuinfo)
    return {"CXRQ_CPUINFO": str(path)}


def test_the_signature_is_the_model_the_cores_and_the_flags_that_matter():
    sig = parse_cpuinfo(BF16_HOST, cores=2)
    assert sig.flags == ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    assert (
        sig.key == "Intel(R) Xeon(R) Processor | 2 cores | avx2+fma+avx512f+avx512_bf16+avx512_vnni+amx_bf16"
    )
    assert parse_cpuinfo(AVX2_HOST, cores=2).key == "AMD EPYC 7B13 | 2 cores | avx2+fma"
    assert parse_cpuinfo(AVX2_HOST, cores=4).key != parse_cpuinfo(AVX2_HOST, cores=2).key


def test_an_entry_is_applied_on_its_own_cpu_only(tmp_path):
    config = {
        "backend": "openvino",
        "threads": 2,
        "preprocess_workers": 1,
        "batch_max_size": 2,
        "batch_max_wait_ms": 5,
        "worker_concurrency": 1,
    }
    env = _keyed(tmp_path, BF16_HOST, {"config": config, "config_fast": config | {"batch_max_size": 8}})
    on_it = engine_config_of(env | _cpu(tmp_path, BF16_HOST))
    assert on_it == config | {"precision": "fp32"}
    fast = engine_config_of(env | _cpu(tmp_path, BF16_HOST) | {"CXRQ_PRECISION": "fast"})
    assert fast["batch_max_size"] == 8
    # Same class of machine, other flags: the built-in defaults, not the other CPU's settings.
    elsewhere = engine_config_of(env | _cpu(tmp_path, AVX2_HOST))
    assert elsewhere["backend"] == "onnxruntime" and elsewhere["batch_max_size"] == 8
    # A file of the old, unkeyed shape names no CPU: applied nowhere.
    (tmp_path / "tuned.json").write_text(json.dumps({"config": config}))
    assert engine_config_of(env | _cpu(tmp_path, BF16_HOST))["backend"] == "onnxruntime"


def test_the_engine_defaults_to_the_tuned_file_and_env_wins(tmp_path):
    config = {
        "backend": "openvino",
        "threads": 1,
        "preprocess_workers": 2,
        "batch_max_size": 6,
        "batch_max_wait_ms": 7,
        "worker_concurrency": 3,
    }
    env = _keyed(tmp_path, AVX2_HOST, {"config": config}) | _cpu(tmp_path, AVX2_HOST)
    got = engine_config_of(env)
    assert got == config | {"precision": "fp32"}
    env_wins = engine_config_of(env | {"CXRQ_BATCH_MAX_SIZE": "3"})
    assert env_wins["batch_max_size"] == 3 and env_wins["preprocess_workers"] == 2
    zero_wait = engine_config_of(env | {"CXRQ_BATCH_MAX_WAIT_MS": "0"})
    assert zero_wait["batch_max_wait_ms"] == 0  # zero is a value, not "unset"

    (tmp_path / "tuned.json").write_text("{not json")
    broken = engine_config_of(env)
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


def test_the_committed_tuned_file_holds_tuner_outputs_keyed_by_cpu(tmp_path):
    committed = json.loads((ROOT / "worker" / "runtime" / "tuned.json").read_text())
    assert committed["format"] == 2 and committed["hosts"]
    for key, entry in committed["hosts"].items():
        assert entry["cpu"]["key"] == key
        assert set(entry["config"]) == {
            "backend",
            "threads",
            "preprocess_workers",
            "batch_max_size",
            "batch_max_wait_ms",
            "worker_concurrency",
        }
        assert entry["measured"]["p95_batch_ms"] <= entry["budget_ms"]
        assert entry["sweep"] and entry["machine"]["cores"]
    # Each entry measured with its flags recorded is what a worker on that CPU runs.
    for key, entry in committed["hosts"].items():
        if not entry["cpu"]["flags"]:
            continue
        flags = " ".join(entry["cpu"]["flags"])
        cpuinfo = f"model name\t: {entry['cpu']['model']}\nflags\t\t: {flags}\n"
        env = {"CXRQ_VAR_DIR": str(tmp_path / "var")} | _cpu(tmp_path, cpuinfo)
        if entry["cpu"]["cores"] != os.cpu_count():
            continue  # the signature counts this machine's cores: only checkable on such a machine
        assert engine_config_of(env) == entry["config"] | {"precision": "fp32"}, key
