"""A worker's first start on a CPU with no tuned entry: a bounded tune, cached per CPU, run once per
host; the committed entry wins; another CPU's cache entry is never applied; budget 0 disables it.

The start is what the Celery worker's main process does before its pool starts
(worker/tasks.py -> autotune.first_start(), which runs `python -m worker.runtime.autotune`),
in a fresh process with the CPU faked (CXRQ_CPUINFO) and the test stand-in as the runtime, so that a
tune fits in seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import DATA, ROOT, png_bytes
from worker.runtime import autotune
from worker.runtime.cpu import parse_cpuinfo
from worker.runtime.tuned import EngineConfig, engine_config

AVX2_HOST = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
BF16_HOST = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 fma avx512f avx512_bf16 amx_bf16\n"
BUDGET_S = 10.0

# One worker start, as the main process runs it, and the engine configuration its pool would then get.
START = """
import dataclasses, json, time, django
django.setup()
from worker.runtime import autotune
from worker.runtime.tuned import engine_config
t = time.monotonic()
child = autotune.first_start()
print(json.dumps({"tuned": child is not None, "seconds": time.monotonic() - t,
                  "config": dataclasses.asdict(engine_config())}), flush=True)
"""


def _key(cpuinfo: str) -> str:
    return parse_cpuinfo(cpuinfo, cores=os.cpu_count() or 1).key


def _small_images(tmp_path: Path) -> Path:
    """Images that preprocess in a moment, so the stand-in's cost per batch decides the choice."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for seed in range(3):
        (folder / f"{seed}.png").write_bytes(png_bytes(size=(224, 224), seed=seed))
    return folder


def _env(tmp_path: Path, cpuinfo: str, **extra: str) -> dict[str, str]:
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    committed = tmp_path / "tuned.json"
    if not committed.exists():  # the committed file: another CPU's entry only
        committed.write_text(
            json.dumps({"format": 2, "hosts": {_key(BF16_HOST): {"config": {"batch_max_size": 2}}}})
        )
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
        "CXRQ_VAR_DIR": str(tmp_path / "var"),
        "CXRQ_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "CXRQ_TUNED_CONFIG": str(committed),
        "CXRQ_CPUINFO": str(tmp_path / "cpuinfo"),
        "CXRQ_MODEL_FAKE": "1",
        "CXRQ_MODEL_CALIBRATION_DIR": str(_small_images(tmp_path)),
        "CXRQ_AUTOTUNE_BUDGET_S": str(BUDGET_S),
        "CXRQ_FAKE_BATCH_MS": "100",  # per batch: bigger batches are far faster, so the choice is plain
        "CXRQ_FAKE_IMAGE_MS": "1",
    } | extra


def _start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", START],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    lines = out.strip().splitlines()
    return json.loads(lines[-1]), out + err


def _cache(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "cache" / "autotune-fake.json").read_text())


def test_two_first_starts_at_once_tune_once_within_the_budget_and_the_next_start_uses_the_cache(tmp_path):
    env = _env(tmp_path, AVX2_HOST)
    results = [_finish(p) for p in [_start(env), _start(env)]]
    logs = "".join(log for _, log in results)
    assert all(r["tuned"] for r, _ in results), logs  # each main process saw no entry, started the child
    assert logs.count("autotune: tuned") == 1, logs  # one held the lock and tuned
    assert logs.count("autotune: skipped reason=cached") == 1, logs  # the other waited, then read it
    assert all(r["seconds"] <= BUDGET_S + autotune.GRACE_S for r, _ in results)
    cached = _cache(tmp_path)
    assert set(cached["hosts"]) == {_key(AVX2_HOST)}
    entry = cached["hosts"][_key(AVX2_HOST)]
    assert entry["source"] == "autotune" and entry["tuned_at"].startswith("20")
    assert entry["measured"]["elapsed_s"] <= BUDGET_S + 1.5  # it stopped measuring by the deadline
    rows = entry["candidates"]
    assert rows and all(r["img_s"] > 0 for r in rows)
    # The default (8) is measured first; with 100 ms per batch, bigger batches win.
    assert rows[0]["batch_max_size"] == 8
    assert entry["config"]["batch_max_size"] == max(r["batch_max_size"] for r in rows)
    for r, _ in results:  # what both pools then run
        assert r["config"]["batch_max_size"] == entry["config"]["batch_max_size"]
        assert r["config"]["threads"] == entry["config"]["threads"]
    assert "autotune" not in (tmp_path / "tuned.json").read_text()  # never the committed file

    again, log = _finish(_start(env))
    assert not again["tuned"] and again["seconds"] < 1.0, log
    assert again["config"] == results[0][0]["config"]
    assert _cache(tmp_path) == cached


def test_a_held_lock_means_no_second_tune(tmp_path):
    """The lock held elsewhere: in the background the child leaves it to the holder at once; before
    the pool starts it waits for the holder until its deadline, and tunes nothing itself."""
    env = _env(tmp_path, AVX2_HOST, CXRQ_AUTOTUNE_BUDGET_S="2")
    cmd = [sys.executable, "-m", "worker.runtime.autotune", "--mode"]
    with autotune.tune_lock(tmp_path / "cache", wait_until=None) as held:
        assert held
        children = {
            mode: subprocess.Popen([*cmd, mode], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            for mode in ("background", "before")
        }
        outs = {mode: child.communicate(timeout=60)[0] for mode, child in children.items()}
        waited = {}
        for mode, out in outs.items():
            found = re.search(r"skipped reason=another_process_is_tuning waited_s=([\d.]+)", out)
            assert found, (mode, out)
            waited[mode] = float(found[1])
        assert waited["background"] < 1.0  # leaves it to the holder at once
        assert 2.0 <= waited["before"] <= 2.0 + autotune.HOLDER_OVERRUN_S + 1.0  # waits, to its deadline
    assert not (tmp_path / "cache" / "autotune-fake.json").exists()


def test_budget_zero_disables_the_tune(tmp_path):
    first, log = _finish(_start(_env(tmp_path, AVX2_HOST, CXRQ_AUTOTUNE_BUDGET_S="0")))
    assert not first["tuned"] and first["config"]["batch_max_size"] == 8, log
    assert not (tmp_path / "cache" / "autotune-fake.json").exists()


# --- which entry applies (in process: settings and the faked CPU changed per test) -----------


def _write_cache(settings, tmp_path, cpuinfo: str, config: dict) -> None:
    settings.MODEL_CACHE_DIR = tmp_path / "cache"
    settings.MODEL_CACHE_DIR.mkdir(exist_ok=True)
    entry = {"source": "autotune", "cpu": {"key": _key(cpuinfo)}, "config": config}
    (settings.MODEL_CACHE_DIR / "autotune.json").write_text(
        json.dumps({"format": 2, "hosts": {_key(cpuinfo): entry}})
    )


@pytest.fixture
def on_cpu(tmp_path, monkeypatch, settings):
    settings.MODEL_FAKE = False
    settings.TUNED_CONFIG = tmp_path / "tuned.json"
    settings.AUTOTUNE_BUDGET_S = 30.0
    for name in ("BACKEND", "TORCH_THREADS", "PREPROCESS_WORKERS", "BATCH_MAX_SIZE", "BATCH_MAX_WAIT_MS"):
        setattr(settings, name, None)

    def use(cpuinfo: str) -> None:
        (tmp_path / "cpuinfo").write_text(cpuinfo)
        monkeypatch.setenv("CXRQ_CPUINFO", str(tmp_path / "cpuinfo"))

    return use


def test_a_cached_entry_for_another_cpu_is_never_applied(settings, tmp_path, on_cpu):
    _write_cache(settings, tmp_path, BF16_HOST, {"batch_max_size": 2, "threads": 1})
    on_cpu(BF16_HOST)
    assert (engine_config().batch_max_size, engine_config().threads) == (2, 1)
    assert autotune.reason_not_to_tune() == "cached"
    on_cpu(AVX2_HOST)
    assert engine_config() == EngineConfig()  # the defaults
    assert autotune.reason_not_to_tune() is None  # this CPU gets its own tune
    # The cache of the test stand-in is never the model's.
    settings.MODEL_FAKE = True
    on_cpu(BF16_HOST)
    assert engine_config() == EngineConfig()


def test_the_committed_entry_wins_over_the_cache_and_the_environment_over_both(settings, tmp_path, on_cpu):
    _write_cache(settings, tmp_path, AVX2_HOST, {"batch_max_size": 2, "threads": 1})
    committed = {"backend": "openvino", "batch_max_size": 4, "threads": 2}
    settings.TUNED_CONFIG.write_text(
        json.dumps({"format": 2, "hosts": {_key(AVX2_HOST): {"config": committed}}})
    )
    on_cpu(AVX2_HOST)
    assert engine_config() == EngineConfig(backend="openvino", batch_max_size=4, threads=2)
    assert autotune.reason_not_to_tune() == "committed"
    settings.BATCH_MAX_SIZE = 16
    assert engine_config().batch_max_size == 16
    # A cached fp32 tune says nothing of fast mode's batch size.
    settings.TUNED_CONFIG.unlink()
    settings.BATCH_MAX_SIZE = None
    assert engine_config(precision="fp32").batch_max_size == 2
    assert engine_config(precision="fast").batch_max_size == EngineConfig().batch_max_size


def test_the_tune_keeps_to_its_deadline_and_sweeps_only_what_the_environment_leaves(settings, fake_runtime):
    images = [p.read_bytes() for p in sorted(DATA.glob("*.png"))][:2]
    loads: list[EngineConfig] = []

    def load(config: EngineConfig):
        loads.append(config)
        return fake_runtime

    settings.BATCH_MAX_SIZE, settings.TORCH_THREADS = None, None
    t = time.monotonic()
    result = autotune.tune(deadline=t + 1.5, load=load, images=images, base=EngineConfig(), cores=2)
    assert time.monotonic() - t < 1.5 + 1.0
    assert [c.threads for c in loads] == [2, 1][: len(loads)] and result["candidates"]
    best = max(r["img_s"] for r in result["candidates"])
    chosen = next(
        r for r in result["candidates"] if r["batch_max_size"] == result["chosen"]["batch_max_size"]
    )
    assert chosen["img_s"] >= 0.97 * best

    assert (
        autotune.tune(deadline=time.monotonic(), load=load, images=images, base=EngineConfig(), cores=2)[
            "chosen"
        ]
        is None
    )  # no time: nothing measured, nothing to cache

    settings.BATCH_MAX_SIZE, settings.TORCH_THREADS = 4, 1
    assert [(c.threads, c.batch_max_size) for c in autotune.candidates(EngineConfig(), 2)] == [(1, 4)]
