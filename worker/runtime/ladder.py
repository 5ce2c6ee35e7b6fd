"""Fast mode's precision ladder: the fastest guarded precision this CPU offers, chosen at start.

A worker started with CXRQ_PRECISION=fast climbs the rungs its CPU offers, in order:

  bf16  where OpenVINO reports BF16 and the CPU has bf16 instructions (AVX512_BF16, AMX-BF16);
        mixed: the most sensitive parts stay fp32 (worker/runtime/backends.py)
  int8  where int8 pays (VNNI, AVX-VNNI, AMX-INT8, or plain AVX2) and OpenVINO reports INT8:
        accuracy-aware post-training quantization (worker/runtime/quantize.py)

and keeps the first one that passes both checks:

  accuracy  the guard (worker/runtime/guard.py): max |dprob| <= FAST_MAX_ABS_DIFF on the
            calibration images against the exact pipeline (exact preprocessing, fp32);
  speed     a short timed run, taking turns with the fp32 default backend at the same batch
            size: kept only when at least FAST_MIN_SPEEDUP times as fast. A choice read from CPU
            flags alone can pick a precision slower than fp32 (bf16 emulated under an ISA cap ran
            2.2x slower); a timed run cannot.

A rung that fails to build (OpenVINO refusing to compile, a quantization error) is refused with
its reason, never a crash. When no rung is kept, fast mode is the default configuration exactly.
Every rung tried is recorded (precision, kept or refused, reason, max |dprob|, ms per image), and
goes into the runtime's `fast_guard`, so into the heartbeat and every result's provenance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from worker.runtime import guard
from worker.runtime.backends import Backend
from worker.runtime.guard import GuardVerdict, Predict, Preprocess

logger = logging.getLogger(__name__)

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx2")  # best first


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers fast mode: OpenVINO's CPU capabilities and the CPU's flags."""

    openvino: frozenset[str]  # OPTIMIZATION_CAPABILITIES, e.g. {"FP32", "BF16", "INT8"}
    cpu_flags: tuple[str, ...]  # worker/runtime/cpu.py's signature flags

    def bf16(self) -> str:
        """'' when bf16 is offered, else why not."""
        if "BF16" not in self.openvino:
            return "OpenVINO reports no BF16 on this CPU"
        if not any(f in self.cpu_flags for f in BF16_FLAGS):
            return f"no bf16 instructions on this CPU ({'/'.join(BF16_FLAGS)})"
        return ""

    def int8(self) -> str:
        """'' when int8 is offered, else why not."""
        if "INT8" not in self.openvino:
            return "OpenVINO reports no INT8 on this CPU"
        if not any(f in self.cpu_flags for f in INT8_FLAGS):
            return f"no int8 instructions that pay on this CPU ({'/'.join(INT8_FLAGS)})"
        return ""

    @property
    def int8_isa(self) -> str:
        return next((f for f in INT8_FLAGS if f in self.cpu_flags), "")


def capabilities() -> Capabilities:
    """This machine's: OpenVINO's view (when installed) and worker/runtime/cpu.py's flags
    (CXRQ_CPUINFO fakes them)."""
    from worker.runtime import cpu

    try:
        from worker.runtime.backends import openvino_capabilities

        ov_caps = openvino_capabilities()
    except ImportError:
        ov_caps = frozenset()
    return Capabilities(openvino=ov_caps, cpu_flags=cpu.current().flags)


@dataclass
class Rung:
    """One candidate: its precision and a way to build it, or why this machine does not offer it."""

    precision: str
    backend: str
    build: Callable[[], Backend] | None
    detail: str = ""  # e.g. which parts stay fp32
    unavailable: str = ""  # set when build is None


@dataclass
class Tried:
    precision: str
    backend: str
    detail: str
    kept: bool
    reason: str
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    ms_per_image: float | None = None
    fp32_ms_per_image: float | None = None
    speedup: float | None = None
    build_ms: float | None = None
    # Operator detail (e.g. the quantization's record, with paths on this host): kept out of
    # results, which clients read.
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "extra"}


@dataclass
class Outcome:
    backend: Backend | None  # the rung kept, or None: fast mode runs the default
    tried: list[Tried]
    verdict: GuardVerdict | None  # the guard's verdict on the kept rung, else on the first it measured
    ms: float

    def fast_guard(self, *, limit: float, images: int) -> dict:
        """The provenance's `fast_guard`: the guard's fields, then every rung tried."""
        kept = next((t for t in self.tried if t.kept), None)
        measured = kept or next((t for t in self.tried if t.max_abs_diff is not None), None)
        if kept is not None:
            reason = f"{kept.precision}: {kept.reason}"
        elif self.tried:
            reason = "; ".join(f"{t.precision}: {t.reason}" for t in self.tried) + " (fast runs the default)"
        else:
            reason = "no fast precision on this machine (fast runs the default)"
        return {
            "backend": kept.backend if kept else None,
            "precision": kept.precision if kept else None,
            "kept": kept is not None,
            "max_abs_diff": measured.max_abs_diff if measured else None,
            "mean_abs_diff": measured.mean_abs_diff if measured else None,
            "limit": limit,
            "images": images,
            "ms": round(self.ms, 1),
            "reason": reason,
            "tried": [t.as_dict() for t in self.tried],
        }


def time_per_image(
    candidate: Predict, default: Predict, batch: np.ndarray, *, seconds: float
) -> tuple[float, float]:
    """(candidate, default) ms per image: turns of one batch each, best of each (a busy machine
    slows a turn, never speeds one up), at least three turns each, about `seconds` in all."""
    candidate(batch)
    default(batch)  # first runs allocate; not counted
    best = {"candidate": float("inf"), "default": float("inf")}
    started, turns = time.perf_counter(), 0
    while turns < 3 or time.perf_counter() - started < seconds:
        for name, predict in (("candidate", candidate), ("default", default)):
            t0 = time.perf_counter()
            predict(batch)
            best[name] = min(best[name], time.perf_counter() - t0)
        turns += 1
        if turns >= 50:
            break
    n = len(batch)
    return best["candidate"] * 1000 / n, best["default"] * 1000 / n


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {text}"[:limit]


def climb(
    rungs: list[Rung],
    *,
    default: Backend,
    images: list[bytes],
    exact_preprocess: Preprocess,
    fast_preprocess: Preprocess,
    limit: float,
    batch_size: int,
    timing_seconds: float,
    min_speedup: float,
) -> Outcome:
    """Try each rung in order; keep the first that is within the guard's limit and faster."""
    started = time.perf_counter()
    batch_size = max(1, batch_size)
    tried: list[Tried] = []
    reference = guard.reference_probabilities(images, exact_preprocess, default.predict, batch_size)
    timing_batch = _timing_batch(images, exact_preprocess, batch_size)
    kept: Backend | None = None
    verdict: GuardVerdict | None = None
    for rung in rungs:
        if rung.build is None:
            tried.append(Tried(rung.precision, rung.backend, rung.detail, False, rung.unavailable))
            continue
        t0 = time.perf_counter()
        try:
            candidate = rung.build()
        except Exception as exc:  # a compile or quantization failure refuses the rung, never the worker
            logger.warning(
                "event=fast_candidate_failed precision=%s backend=%s detail=%r error=%r",
                rung.precision,
                rung.backend,
                rung.detail,
                _first_line(exc),
                exc_info=True,
            )
            tried.append(
                Tried(
                    rung.precision, rung.backend, rung.detail, False, f"failed to build: {_first_line(exc)}"
                )
            )
            continue
        build_ms = round((time.perf_counter() - t0) * 1000, 1)
        check = guard.check_fast(
            images=images,
            exact=(exact_preprocess, default.predict),
            fast=(fast_preprocess, candidate.predict),
            limit=limit,
            batch_size=batch_size,
            reference=reference,
        )
        if len(images) < guard.MIN_CALIBRATION_IMAGES:
            ms = fp32_ms = None
        else:
            try:
                ms, fp32_ms = time_per_image(
                    candidate.predict, default.predict, timing_batch, seconds=timing_seconds
                )
            except Exception as exc:
                logger.warning("event=fast_candidate_failed precision=%s", rung.precision, exc_info=True)
                tried.append(
                    Tried(
                        rung.precision, rung.backend, rung.detail, False, f"failed to run: {_first_line(exc)}"
                    )
                )
                continue
        speedup = round(fp32_ms / ms, 2) if ms and fp32_ms else None
        fast_enough = speedup is not None and speedup >= min_speedup
        if not check.kept:
            reason = check.reason
        elif not fast_enough:
            reason = (
                f"not faster than fp32: {ms:.1f} vs {fp32_ms:.1f} ms/image "
                f"(needs {min_speedup}x, FAST_MIN_SPEEDUP)"
                if ms and fp32_ms
                else "not timed"
            )
        else:
            reason = f"within limit and {speedup}x fp32's speed"
        entry = Tried(
            rung.precision,
            rung.backend,
            rung.detail,
            check.kept and fast_enough,
            reason,
            max_abs_diff=check.max_abs_diff,
            mean_abs_diff=check.mean_abs_diff,
            ms_per_image=round(ms, 2) if ms else None,
            fp32_ms_per_image=round(fp32_ms, 2) if fp32_ms else None,
            speedup=speedup,
            build_ms=build_ms,
            extra=dict(getattr(candidate, "report", None) or {}),
        )
        tried.append(entry)
        if verdict is None or entry.kept:
            verdict = check
        logger.info(
            "event=fast_candidate precision=%s backend=%s detail=%r kept=%s max_abs_diff=%s ms_per_image=%s "
            "fp32_ms_per_image=%s reason=%r",
            entry.precision,
            entry.backend,
            entry.detail,
            entry.kept,
            entry.max_abs_diff,
            entry.ms_per_image,
            entry.fp32_ms_per_image,
            entry.reason,
        )
        if entry.kept:
            kept = candidate
            break
        del candidate
    return Outcome(backend=kept, tried=tried, verdict=verdict, ms=(time.perf_counter() - started) * 1000)


def _timing_batch(images: list[bytes], preprocess: Preprocess, batch_size: int) -> np.ndarray:
    if not images:
        return np.zeros((batch_size, 1, 224, 224), dtype=np.float32)
    arrays = [preprocess(data) for data in images[:batch_size]]
    return np.stack((arrays * (batch_size // len(arrays) + 1))[:batch_size])
