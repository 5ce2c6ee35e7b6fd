"""The fast-mode guard, both ways: kept when within FAST_MAX_ABS_DIFF (and faster), refused (the default,
said in the log, the heartbeat info and every result) when not. Here only the bf16 rungs are tried
and the timed run is told bf16 is twice as fast: what is tested is the guard and what a worker
says; the ladder's other branches are in test_ladder.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from django.test import override_settings

from backend.jobs.models import JobResult
from tests.factories import post_image, sample_bytes
from worker.runtime import guard, ladder
from worker.runtime.backends import openvino_supports_bf16
from worker.runtime.preprocess import preprocess

pytestmark = pytest.mark.skipif(not openvino_supports_bf16(), reason="this CPU has no bf16 instructions")


def _twice_as_fast(candidate, default, batch, *, seconds):
    return 5.0, 10.0


def _load(limit: float):
    from worker.runtime.model import load_runtime

    with (
        override_settings(
            PRECISION="fast", FAST_MAX_ABS_DIFF=limit, BACKEND="onnxruntime", FAST_CANDIDATES=["bf16"]
        ),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(ladder, "time_per_image", _twice_as_fast)
        return load_runtime()


@pytest.fixture(scope="module")
def kept(runtime):
    return _load(1.0)


@pytest.mark.django_db
def test_guard_keeps_fast_within_the_limit_and_every_result_says_bf16(kept, api, settings):
    from worker.lifecycle import WorkerProcess

    assert (kept.backend.name, kept.backend.precision) == ("openvino", "bf16")
    assert kept.fast_guard["kept"] is True and kept.fast_guard["images"] >= 2
    assert 0 < kept.fast_guard["max_abs_diff"] <= 1.0
    (first,) = kept.fast_guard["tried"]  # the first bf16 rung is kept; the others are not tried
    assert (first["precision"], first["kept"], first["speedup"]) == ("bf16", True, 2.0)
    assert kept.preprocessing.endswith("+jpeg-draft")
    prov = kept.provenance()
    assert (prov["backend"], prov["precision"], prov["precision_requested"]) == ("openvino", "bf16", "fast")

    settings.BATCH_MAX_WAIT_MS = 0
    settings.PRECISION = "fast"  # the web of a fast deployment: its own dedup keys
    job = post_image(api, sample_bytes("00000001_000.png")).json()["id"]
    assert kept.model_version.endswith("+fast")  # fast results never share fp32's cache
    proc = WorkerProcess(runtime=kept)
    try:
        proc.start()
        assert proc.info()["precision"] == "bf16"
        proc.drain()
    finally:
        proc.stop()
    stored = JobResult.objects.get(job_id=job).provenance
    assert (stored["backend"], stored["precision"], stored["fast_guard"]["kept"]) == (
        "openvino",
        "bf16",
        True,
    )


@pytest.mark.django_db
def test_guard_refuses_fast_beyond_the_limit_and_says_so(runtime, api, settings, caplog):
    from worker.lifecycle import WorkerProcess

    with caplog.at_level(logging.WARNING, logger="worker.runtime.model"):
        refused = _load(1e-9)
    assert any("event=fast_refused" in r.getMessage() for r in caplog.records)
    assert (refused.backend.name, refused.backend.precision) == ("onnxruntime", "fp32")
    assert refused.fast_guard["kept"] is False
    assert refused.fast_guard["max_abs_diff"] > 1e-9
    tried = refused.fast_guard["tried"]
    assert tried and all(not t["kept"] and "FAST_MAX_ABS_DIFF" in t["reason"] for t in tried)
    assert all(t["ms_per_image"] == 5.0 for t in tried)  # refused, and its speed still reported
    assert refused.preprocessing == runtime.preprocessing  # exact preprocessing too
    prov = refused.provenance()
    assert (prov["precision"], prov["precision_requested"]) == ("fp32", "fast")
    # The answers are the fp32 ones.
    x = preprocess(sample_bytes("h0001.png"))[None]
    assert np.abs(refused.predict(x) - runtime.predict(x)).max() <= 1e-4  # fp32 (either backend)

    settings.BATCH_MAX_WAIT_MS = 0
    settings.PRECISION = "fast"
    job = post_image(api, sample_bytes("h0001.png")).json()["id"]
    proc = WorkerProcess(runtime=refused)
    try:
        proc.start()
        assert (proc.info()["precision"], proc.info()["precision_requested"]) == ("fp32", "fast")
        assert proc.info()["fast_guard"]["kept"] is False  # health shows the refusal
        proc.drain()
    finally:
        proc.stop()
    stored = JobResult.objects.get(job_id=job).provenance
    assert (stored["precision"], stored["precision_requested"]) == ("fp32", "fast")
    assert stored["fast_guard"]["kept"] is False


# --- the guard itself, on arithmetic we control ---------------------------------------------


def _images() -> list[bytes]:
    return [sample_bytes("00000001_000.png"), sample_bytes("tb0005.png"), sample_bytes("h0001.png")]


def _exact(batch: np.ndarray) -> np.ndarray:
    return np.tile(batch.reshape(len(batch), -1)[:, :1] / 2048 + 0.5, (1, 18))


@pytest.mark.parametrize(
    ("shift", "limit", "kept"),
    [(0.01, 0.02, True), (0.03, 0.02, False), (0.019, 0.02, True), (0.021, 0.02, False)],
)
def test_guard_compares_max_abs_diff_with_the_limit(shift, limit, kept):
    verdict = guard.check_fast(
        images=_images(),
        exact=(preprocess, _exact),
        fast=(preprocess, lambda b: _exact(b) + shift),
        limit=limit,
        batch_size=2,
    )
    assert verdict.kept is kept
    assert verdict.max_abs_diff == pytest.approx(shift, abs=1e-6)
    assert verdict.images == 3


def test_guard_refuses_without_calibration_images_or_with_nan():
    none = guard.check_fast(
        images=[], exact=(preprocess, _exact), fast=(preprocess, _exact), limit=1, batch_size=2
    )
    assert not none.kept and "calibration" in none.reason
    nan = guard.check_fast(
        images=_images(),
        exact=(preprocess, _exact),
        fast=(preprocess, lambda b: _exact(b) * np.nan),
        limit=1,
        batch_size=2,
    )
    assert not nan.kept


def test_calibration_images_are_the_files_the_pipeline_accepts(tmp_path):
    (tmp_path / "a.png").write_bytes(sample_bytes("00000001_000.png"))
    (tmp_path / "notes.md").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert guard.calibration_images(tmp_path) == [sample_bytes("00000001_000.png")]
