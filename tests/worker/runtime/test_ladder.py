"""Fast mode's precision ladder: each branch with the CPU's capabilities faked (worker/runtime/ladder.py).

The rungs here are numpy arithmetic whose error we choose, and the timed run is replaced by the
speeds each test states, so every branch is decided by what the test says, on any machine; the
capability tests fake the CPU with CXRQ_CPUINFO (worker/runtime/cpu.py) and OpenVINO's report.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from django.test import override_settings

from tests.factories import sample_bytes
from worker.runtime import ladder
from worker.runtime.ladder import Capabilities, Rung
from worker.runtime.preprocess import preprocess

LIMIT = 0.02

# /proc/cpuinfo of three CPUs, reduced to what worker/runtime/cpu.py reads.
BF16_CPU = "model name\t: Fake Xeon bf16\nflags\t\t: fpu sse avx2 fma avx512f avx512_bf16 avx512_vnni\n"
AVX2_CPU = "model name\t: Fake Xeon avx2\nflags\t\t: fpu sse avx2 fma\n"
OLD_CPU = "model name\t: Fake Core sse\nflags\t\t: fpu sse sse2\n"


def _images() -> list[bytes]:
    return [sample_bytes("00000001_000.png"), sample_bytes("tb0005.png"), sample_bytes("h0001.png")]


class FakeBackend:
    """Probabilities from the first pixel, shifted by `error`: a backend whose error we choose."""

    def __init__(self, name: str, precision: str, error: float = 0.0):
        self.name, self.precision, self.error = name, precision, error

    def predict(self, batch: np.ndarray) -> np.ndarray:
        base = batch.reshape(len(batch), -1)[:, :1] / 4096 + 0.5
        return np.tile(base, (1, 18)).astype(np.float32) + np.float32(self.error)


DEFAULT = FakeBackend("onnxruntime", "fp32")


@pytest.fixture
def speeds(monkeypatch):
    """ms per image each precision runs at in the timed run; fp32 (the default) at 10."""
    table: dict[str, float] = {}
    calls: list[str] = []

    def fake_time(candidate, default, batch, *, seconds):
        precision = candidate.__self__.precision
        calls.append(precision)
        return table[precision], 10.0

    monkeypatch.setattr(ladder, "time_per_image", fake_time)
    return table


def _rung(precision: str, error: float, backend: str = "openvino") -> Rung:
    return Rung(precision, backend, lambda: FakeBackend(backend, precision, error), detail="test")


def _climb(rungs: list[Rung], images: list[bytes] | None = None) -> ladder.Outcome:
    return ladder.climb(
        rungs,
        default=DEFAULT,
        images=_images() if images is None else images,
        exact_preprocess=preprocess,
        fast_preprocess=preprocess,
        limit=LIMIT,
        batch_size=2,
        timing_seconds=0.1,
        min_speedup=1.1,
    )


def test_bf16_within_the_limit_and_faster_is_kept_and_int8_never_built(speeds):
    speeds.update(bf16=5.0, int8=3.0)
    built = []
    int8 = Rung("int8", "openvino", lambda: built.append("int8") or FakeBackend("openvino", "int8"))
    outcome = _climb([_rung("bf16", 0.01), int8])
    assert outcome.backend is not None and outcome.backend.precision == "bf16"
    assert built == []  # the first rung that passes both checks is kept
    (bf16,) = outcome.tried
    assert bf16.kept and bf16.max_abs_diff == pytest.approx(0.01, abs=1e-6)
    assert (bf16.ms_per_image, bf16.fp32_ms_per_image, bf16.speedup) == (5.0, 10.0, 2.0)
    info = outcome.fast_guard(limit=LIMIT, images=3)
    assert (info["kept"], info["backend"], info["precision"]) == (True, "openvino", "bf16")
    assert info["max_abs_diff"] == pytest.approx(0.01, abs=1e-6) and info["limit"] == LIMIT


def test_bf16_refused_by_the_guard_then_int8_is_tried_and_kept(speeds):
    speeds.update(bf16=5.0, int8=4.0)
    outcome = _climb([_rung("bf16", 0.03), _rung("int8", 0.015)])
    assert outcome.backend is not None and outcome.backend.precision == "int8"
    bf16, int8 = outcome.tried
    assert not bf16.kept and "FAST_MAX_ABS_DIFF" in bf16.reason
    assert bf16.ms_per_image == 5.0  # a refused rung still shows its speed and its error
    assert bf16.max_abs_diff == pytest.approx(0.03, abs=1e-6)
    assert int8.kept and int8.speedup == 2.5
    info = outcome.fast_guard(limit=LIMIT, images=3)
    assert info["precision"] == "int8" and [t["precision"] for t in info["tried"]] == ["bf16", "int8"]


def test_int8_refused_by_speed_leaves_the_default(speeds):
    speeds.update(bf16=12.0, int8=9.5)  # bf16 slower than fp32; int8 faster, but not by 1.1x
    outcome = _climb([_rung("bf16", 0.005), _rung("int8", 0.005)])
    assert outcome.backend is None
    assert all(not t.kept and "not faster than fp32" in t.reason for t in outcome.tried)
    info = outcome.fast_guard(limit=LIMIT, images=3)
    assert info["kept"] is False and info["precision"] is None
    assert "fast runs the default" in info["reason"]
    assert [t["ms_per_image"] for t in info["tried"]] == [12.0, 9.5]


def test_a_rung_that_fails_to_compile_is_refused_with_its_reason_and_the_next_is_tried(speeds, caplog):
    speeds.update(int8=4.0)

    def fails():
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:\nCannot compile MaxPool node")

    with caplog.at_level(logging.WARNING, logger="worker.runtime.ladder"):
        outcome = _climb([Rung("bf16", "openvino", fails), _rung("int8", 0.001)])
    bf16, int8 = outcome.tried
    assert not bf16.kept and bf16.reason.startswith("failed to build: RuntimeError")
    assert "\n" not in bf16.reason and bf16.max_abs_diff is None
    assert any("event=fast_candidate_failed" in r.getMessage() for r in caplog.records)
    assert outcome.backend is not None and int8.kept


def test_no_rung_offered_means_the_default_and_says_why(speeds):
    offered_none = [
        Rung("bf16", "openvino", None, unavailable="OpenVINO reports no BF16 on this CPU"),
        Rung("int8", "openvino", None, unavailable="no int8 instructions that pay on this CPU"),
    ]
    outcome = _climb(offered_none)
    assert outcome.backend is None and not speeds  # nothing built, nothing timed
    info = outcome.fast_guard(limit=LIMIT, images=3)
    assert info["kept"] is False and "no BF16" in info["reason"]
    assert _climb([]).fast_guard(limit=LIMIT, images=3)["reason"].startswith("no fast precision")


def test_without_calibration_images_nothing_is_kept(speeds):
    speeds.update(bf16=1.0)
    outcome = _climb([_rung("bf16", 0.0)], images=[])
    assert outcome.backend is None and "calibration" in outcome.tried[0].reason


def test_the_timed_run_takes_turns_and_keeps_the_best_of_each():
    calls = []

    class Slow(FakeBackend):
        def predict(self, batch):
            calls.append(self.precision)
            return super().predict(batch)

    fast_ms, default_ms = ladder.time_per_image(
        Slow("openvino", "bf16").predict,
        Slow("onnxruntime", "fp32").predict,
        np.zeros((4, 1, 8, 8)),
        seconds=0,
    )
    assert calls[:4] == ["bf16", "fp32", "bf16", "fp32"] and len(calls) >= 8
    assert fast_ms > 0 and default_ms > 0


# --- what the CPU offers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpuinfo", "openvino", "bf16", "int8", "isa"),
    [
        (BF16_CPU, {"FP32", "BF16", "INT8"}, "", "", "avx512_vnni"),
        (AVX2_CPU, {"FP32", "INT8"}, "OpenVINO reports no BF16", "", "avx2"),
        # OpenVINO saying BF16 is not enough: the CPU's flags must say so too (and the reverse).
        (AVX2_CPU, {"FP32", "BF16", "INT8"}, "no bf16 instructions", "", "avx2"),
        (OLD_CPU, {"FP32", "INT8"}, "OpenVINO reports no BF16", "no int8 instructions", ""),
    ],
)
def test_capabilities_follow_the_cpu_flags_and_openvino(
    tmp_path, monkeypatch, cpuinfo, openvino, bf16, int8, isa
):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setenv("CXRQ_CPUINFO", str(tmp_path / "cpuinfo"))
    monkeypatch.setattr("worker.runtime.backends.openvino_capabilities", lambda: frozenset(openvino))
    caps = ladder.capabilities()
    assert caps.bf16().startswith(bf16) if bf16 else caps.bf16() == ""
    assert caps.int8().startswith(int8) if int8 else caps.int8() == ""
    assert caps.int8_isa == isa


def test_the_factory_offers_rungs_by_capability(tmp_path):
    from worker.runtime.model import BF16_SPLITS, BackendFactory, _Loaded

    # Offering builds nothing: a stand-in for the model is enough.
    model = SimpleNamespace(op_threshs=torch.zeros(18))
    factory = BackendFactory(
        _Loaded(model, "ab" * 32, "untrained"), threads=1, device="cpu", cache_dir=tmp_path
    )

    def rungs(caps, candidates=("bf16", "int8")):
        return factory.rungs(
            "onnxruntime",
            caps=caps,
            candidates=list(candidates),
            calibration=lambda: (np.zeros((2, 1, 224, 224), np.float32), DEFAULT.predict),
            limit=LIMIT,
            int8_budget_seconds=1,
        )

    everything = rungs(Capabilities(frozenset({"BF16", "INT8"}), ("avx2", "avx512_bf16", "avx512_vnni")))
    assert [(r.precision, r.build is not None) for r in everything] == [("bf16", True)] * len(BF16_SPLITS) + [
        ("int8", True)
    ]
    assert everything[0].detail == "fp32: stem, head"
    avx2 = rungs(Capabilities(frozenset({"INT8"}), ("avx2", "fma")))
    assert [(r.precision, r.build is not None) for r in avx2][-1] == ("int8", True)
    assert all(r.build is None and "BF16" in r.unavailable for r in avx2 if r.precision == "bf16")
    assert [
        r.precision for r in rungs(Capabilities(frozenset({"INT8"}), ("avx2",)), candidates=["int8"])
    ] == ["int8"]
    assert rungs(Capabilities(frozenset(), ()), candidates=[]) == []


# --- through load_runtime: fast is the default when nothing is kept --------------------------


@pytest.mark.django_db
def test_a_cpu_with_nothing_to_offer_runs_exactly_the_default(tmp_path, monkeypatch, runtime, caplog):
    from worker.runtime.model import load_runtime
    from worker.runtime.tuned import EngineConfig

    (tmp_path / "cpuinfo").write_text(OLD_CPU)
    monkeypatch.setenv("CXRQ_CPUINFO", str(tmp_path / "cpuinfo"))
    monkeypatch.setattr("worker.runtime.backends.openvino_capabilities", lambda: frozenset({"FP32"}))
    # The fast configuration asks for OpenVINO at batch 4; the default is ONNX Runtime at batch 8.
    fast_config = EngineConfig(backend="openvino", precision="fast", batch_max_size=4, threads=1)
    with (
        override_settings(BACKEND="onnxruntime", BATCH_MAX_SIZE=8, TORCH_THREADS=1),
        caplog.at_level(logging.WARNING, logger="worker.runtime.model"),
    ):
        rt = load_runtime(fast_config)
    assert (rt.backend.name, rt.backend.precision) == ("onnxruntime", "fp32")
    assert rt.engine is not None and (rt.engine.backend, rt.engine.batch_max_size) == ("onnxruntime", 8)
    assert rt.preprocessing == runtime.preprocessing  # exact preprocessing, as the default
    guard_info = rt.provenance()["fast_guard"]
    assert guard_info["kept"] is False and rt.extra["fast_ladder"]["cpu_flags"] == []
    assert [(t["precision"], t["kept"]) for t in guard_info["tried"]] == [("bf16", False)] * 2 + [
        ("int8", False)
    ]
    assert any("event=fast_refused" in r.getMessage() for r in caplog.records)
    x = preprocess(sample_bytes("h0001.png"))[None]
    assert np.abs(rt.predict(x) - runtime.predict(x)).max() <= 1e-4


_CHILD = r"""
import json, django
django.setup()
from worker.runtime.model import load_runtime
rt = load_runtime()
print(json.dumps({"backend": rt.backend.name, "precision": rt.backend.precision, "fast_guard": rt.fast_guard}))
"""


@pytest.mark.slow
def test_a_real_compile_failure_under_an_isa_cap_is_a_refusal_not_a_crash(runtime):
    """oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA, which OpenVINO's CPU plugin honours): OpenVINO still
    reports BF16 but cannot compile the model in bf16. The worker starts, on the default."""
    import json
    import subprocess
    import sys

    from tests.factories import ROOT, process_env

    if ladder.capabilities().bf16():
        pytest.skip("this CPU offers no bf16 rung to fail")
    env = process_env(
        {
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "CXRQ_PRECISION": "fast",
            "CXRQ_BACKEND": "onnxruntime",
            "CXRQ_FAST_CANDIDATES": "bf16",
            "CXRQ_FAST_TIMING_SECONDS": "0.2",
        }
    )
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["backend"], result["precision"]) == ("onnxruntime", "fp32")
    tried = result["fast_guard"]["tried"]
    assert tried and all(not t["kept"] and t["reason"].startswith("failed to build: ") for t in tried)
    assert "event=fast_candidate_failed" in out.stderr
