"""Load the model once per worker process, warm it up, and describe it.

`load_runtime()` is the only entry point: it resolves the weights from
settings (official and verified, or the fallback where allowed), exports them
to ONNX on first start (cached by weights sha256, worker/runtime/export.py),
builds the configured backend, climbs fast mode's precision ladder when fast
mode is asked for (worker/runtime/ladder.py: bf16, int8, each guarded and
timed; none kept: the default configuration), and runs one warm-up batch
before the worker takes work.

Settings (docs/performance.md): the engine configuration (worker/runtime/tuned.py:
backend, threads, precision, batch size), CXRQ_DEVICE (auto | cpu | cuda),
CXRQ_FAST_MAX_ABS_DIFF, CXRQ_FAST_PREPROCESS, CXRQ_PREPROCESS.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.jobs.model_identity import (
    MODEL_NAME,
    PREPROCESS_VERSION,
    UNTRAINED,
    ModelIdentity,
    current_identity,
)
from worker.runtime import export, fallback, guard, ladder, segments, weights
from worker.runtime.backends import (
    BF16,
    FP16,
    FP32,
    INT8,
    STEM,
    Backend,
    Head,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    Stage,
    TorchBackend,
    op_threshs_of,
    openvino_fp32,
)
from worker.runtime.decode import decode
from worker.runtime.fast_preprocess import FAST_PREPROCESS_NAME, preprocess_fast
from worker.runtime.guard import Predict
from worker.runtime.preprocess import INPUT_SIZE, normalize, preprocess, reference_model_input
from worker.runtime.segments import FEATURES
from worker.runtime.tuned import EngineConfig, engine_config

logger = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "openvino", "torch")
PRECISIONS = ("fp32", "fast")


@dataclass
class ModelRuntime:
    backend: Backend
    labels: list[str]
    model_version: str
    weights_sha256: str  # sha256 of the loaded file
    weights: str  # "official" or "untrained"
    load_ms: float
    extra: dict[str, Any] = field(default_factory=dict)
    precision_requested: str = FP32
    fast_preprocessing: bool = False
    # The torchxrayvision reference pipeline (scikit-image), for the load test's
    # `reference` configuration (the reference system's setup); same numbers to ~1e-4, far slower.
    reference_preprocessing: bool = False
    fast_guard: dict[str, Any] | None = None
    # The engine configuration this runtime runs where it differs from the one it was loaded with:
    # in fast mode with nothing kept, the default's (fast is then the default, batch size included).
    engine: EngineConfig | None = None

    def provenance(self) -> dict[str, Any]:
        import torchxrayvision as xrv

        prov = {
            "model": MODEL_NAME,
            "model_version": self.model_version,
            "labels": self.labels,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256 if self.weights != UNTRAINED else UNTRAINED,
            "fallback_weights_sha256": self.weights_sha256 if self.weights == UNTRAINED else None,
            "torchxrayvision": xrv.__version__,
            "torch": torch.__version__,
            "preprocessing": self.preprocessing,
            "backend": self.backend.name,
            "precision": self.backend.precision,
            "precision_requested": self.precision_requested,
        }
        if self.fast_guard is not None:
            prov["fast_guard"] = self.fast_guard
        return prov

    @property
    def preprocessing(self) -> str:
        if self.reference_preprocessing:
            return f"{PREPROCESS_VERSION}+reference"
        return (
            f"{PREPROCESS_VERSION}+{FAST_PREPROCESS_NAME}" if self.fast_preprocessing else PREPROCESS_VERSION
        )

    def describe(self) -> dict[str, Any]:
        """What a worker reports in its heartbeat (and so in health)."""
        return {
            "backend": self.backend.name,
            "precision": self.backend.precision,
            # Fast mode asked for but refused by its guard shows here, and so in health.
            "precision_requested": self.precision_requested,
            "fast_guard": self.fast_guard,
            "weights": self.weights,
            "threads": self.extra.get("threads"),
            "load_ms": round(self.load_ms),
        }

    def preprocess(self, data: bytes) -> np.ndarray:
        """Bytes -> model input, with the preprocessing this runtime's precision allows."""
        if self.reference_preprocessing:
            arr, maxval = decode(data)
            return reference_model_input(normalize(arr, maxval))
        return preprocess_fast(data) if self.fast_preprocessing else preprocess(data)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = self.backend.predict(batch)
        if out.shape != (batch.shape[0], len(self.labels)):
            raise RuntimeError(f"model returned {out.shape} for a batch of {batch.shape[0]}")
        return out

    def warm_up(self, batch_size: int) -> None:
        self.predict(np.zeros((batch_size, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32))

    def images_per_second(self, batch_size: int) -> float:
        blank = np.zeros((batch_size, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        started = time.perf_counter()
        self.backend.predict(blank)  # the engine alone: a timing, not a batch of the worker's
        return batch_size / max(time.perf_counter() - started, 1e-9)


def configure_threads(threads: int) -> int:
    n = threads if threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CXRQ_DEVICE=cuda but torch sees no CUDA device")
    return device


@dataclass
class _Loaded:
    model: torch.nn.Module
    sha256: str
    kind: str


def _load_weights(identity: ModelIdentity) -> _Loaded:
    """The weights the identity names: the official file, verified, or the fallback."""
    from django.conf import settings

    path = weights.official_weights_path(
        identity, configured_path=settings.MODEL_WEIGHTS_PATH, allow_fallback=settings.MODEL_ALLOW_FALLBACK
    )
    if path is not None:
        return _Loaded(
            weights.load_official(path, identity.weights_sha256), identity.weights_sha256, "official"
        )
    model, sha = fallback.load_or_build(
        cache_dir=settings.MODEL_CACHE_DIR, calibration_dir=settings.MODEL_CALIBRATION_DIR
    )
    logger.warning("event=untrained_model weights=untrained sha256=%s results_marked=untrained", sha)
    return _Loaded(model, sha, UNTRAINED)


# Which feature parts stay fp32 in each bf16 rung, tried in order (docs/performance.md: measured
# per part on this model; the head, norm5 to the classifier, is always fp32, in numpy).
BF16_SPLITS: tuple[frozenset[str], ...] = (
    frozenset(STEM),
    frozenset((*STEM, "denseblock1")),
)
# int8's accuracy-aware quantization aims below the guard's limit, leaving room for the fast
# preprocessing's own difference.
INT8_DROP_SHARE = 0.75


class BackendFactory:
    """Builds backends for one set of weights; exports to ONNX once, on first need."""

    def __init__(self, loaded: _Loaded, *, threads: int, device: str, cache_dir: Path):
        self.loaded, self.threads, self.device, self.cache_dir = loaded, threads, device, Path(cache_dir)
        self.op_threshs = op_threshs_of(loaded.model)
        self.export_ms = 0.0

    def onnx_files(self, parts: tuple[str, ...]) -> dict[str, Path]:
        files, export_ms = export.ensure_exported(
            self.loaded.model, weights_sha256=self.loaded.sha256, cache_dir=self.cache_dir, parts=parts
        )
        self.export_ms += export_ms
        return files

    def exact(self, name: str) -> Backend:
        if self.device == "cuda" or name == "torch":
            return TorchBackend(self.loaded.model, device=self.device)
        return self._with_reexport(lambda: self._cpu_backend(name))

    def rungs(
        self,
        name: str,
        *,
        caps: ladder.Capabilities,
        candidates: list[str],
        calibration: Callable[[], tuple[np.ndarray, Predict]],
        limit: float,
        int8_budget_seconds: float,
    ) -> list[ladder.Rung]:
        """Fast mode's candidates on this machine, in the order the ladder tries them.

        calibration: () -> (exactly preprocessed calibration inputs, the fp32 predict), for int8.
        """
        if self.device == "cuda":
            return [
                ladder.Rung(
                    FP16, "torch", lambda: TorchBackend(self.loaded.model, device="cuda", precision=FP16)
                )
            ]
        rungs: list[ladder.Rung] = []
        for precision in candidates:
            if precision == BF16:
                rungs += self._bf16_rungs(name, caps)
            elif precision == INT8:
                why_not = caps.int8()
                rungs.append(
                    ladder.Rung(
                        INT8,
                        "openvino",
                        None
                        if why_not
                        else (lambda: self.int8(calibration, limit, int8_budget_seconds, caps)),
                        detail=f"mixed int8/fp32 PTQ ({caps.int8_isa or 'no int8 ISA'})",
                        unavailable=why_not,
                    )
                )
        return rungs

    def _bf16_rungs(self, name: str, caps: ladder.Capabilities) -> list[ladder.Rung]:
        why_not = caps.bf16()
        if name == "torch":
            # torch's own bf16 (oneDNN): the stem and head fp32 like OpenVINO's first split.
            if not why_not and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
                why_not = "torch reports no bf16 on this CPU"
            build = None if why_not else (lambda: TorchBackend(self.loaded.model, precision=BF16))
            return [ladder.Rung(BF16, "torch", build, detail="fp32: stem, head", unavailable=why_not)]
        # ONNX Runtime has no fast bf16 kernels on the CPU: its fast mode is OpenVINO's.
        return [
            ladder.Rung(
                BF16,
                "openvino",
                None if why_not else (lambda fp32_parts=fp32_parts: self.bf16(fp32_parts)),
                detail=_split_detail(fp32_parts),
                unavailable=why_not,
            )
            for fp32_parts in BF16_SPLITS
        ]

    def bf16(self, fp32_parts: frozenset[str]) -> OpenVinoBackend:
        runs = segments.split(fp32_parts)
        files, export_ms = segments.ensure_segments(
            self.loaded.model,
            weights_sha256=self.loaded.sha256,
            cache_dir=self.cache_dir,
            runs=[names for names, _ in runs],
        )
        self.export_ms += export_ms
        return OpenVinoBackend(
            [Stage(path, "f32" if fp32 else "bf16") for path, (_, fp32) in zip(files, runs, strict=True)],
            self.op_threshs,
            threads=self.threads,
            precision=BF16,
            head=Head(self.loaded.model),
            compile_cache_dir=self.cache_dir / "openvino",
            detail=_split_detail(fp32_parts),
        )

    def int8(
        self,
        calibration: Callable[[], tuple[np.ndarray, Predict]],
        limit: float,
        budget_seconds: float,
        caps: ladder.Capabilities,
    ) -> OpenVinoBackend:
        from worker.runtime import cpu, quantize

        inputs, reference = calibration()
        quantized = quantize.ensure_int8(
            logits_onnx=self.onnx_files(("logits",))["logits"],
            op_threshs=self.op_threshs,
            inputs=inputs,
            reference=reference,
            weights_sha256=self.loaded.sha256,
            cache_dir=self.cache_dir,
            cpu_key=cpu.current().key,
            max_drop=limit * INT8_DROP_SHARE,
            budget_seconds=budget_seconds,
        )
        backend = OpenVinoBackend(
            [Stage(quantized.path, "f32")],
            self.op_threshs,
            threads=self.threads,
            precision=INT8,
            compile_cache_dir=self.cache_dir / "openvino",
            detail=_int8_detail(caps, quantized.int8_groups),
        )
        backend.report = {"quantization": quantized.as_dict()}
        return backend

    def _cpu_backend(self, name: str) -> Backend:
        if name == "onnxruntime":
            files = self.onnx_files(("logits",))
            return OnnxRuntimeBackend(files["logits"], self.op_threshs, threads=self.threads)
        if name == "openvino":
            return openvino_fp32(
                self.onnx_files(("logits",)),
                self.op_threshs,
                threads=self.threads,
                compile_cache_dir=self.cache_dir / "openvino",
            )
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")

    def _with_reexport(self, build: Callable[[], Backend]) -> Backend:
        try:
            return build()
        except Exception:
            # A cached export that does not load (damaged on disk): export again, once.
            logger.warning("event=onnx_cache_unusable sha256=%s", self.loaded.sha256, exc_info=True)
            export.discard(self.cache_dir, self.loaded.sha256)
            return build()


def _int8_detail(caps: ladder.Capabilities, int8_groups: tuple[str, ...]) -> str:
    from worker.runtime.quantize import GROUPS

    fp32 = [g for g in GROUPS if g not in int8_groups]
    return f"mixed int8/fp32 PTQ ({caps.int8_isa}); fp32: {', '.join(fp32) or 'none'}"


def _split_detail(fp32_parts: frozenset[str]) -> str:
    kept = [name for name in FEATURES if name in fp32_parts]
    named = ["stem" if set(STEM) <= fp32_parts else None] + [n for n in kept if n not in STEM]
    return "fp32: " + ", ".join([n for n in named if n] + ["head"])


def load_runtime(config: EngineConfig | None = None) -> ModelRuntime:
    """Load the model as `config` says (default: what a worker started now runs)."""
    from django.conf import settings

    config = config or engine_config()
    started = time.perf_counter()
    threads = configure_threads(config.threads)
    device = resolve_device(settings.DEVICE)
    name, requested = config.backend, config.precision
    if name not in BACKENDS:
        raise ValueError(f"CXRQ_BACKEND={name!r}: choose one of {BACKENDS}")
    if requested not in PRECISIONS:
        raise ValueError(f"CXRQ_PRECISION={requested!r}: choose one of {PRECISIONS}")
    identity = current_identity().replace(fast=requested == "fast")
    loaded = _load_weights(identity)
    weights_ms = (time.perf_counter() - started) * 1000
    factory = BackendFactory(loaded, threads=threads, device=device, cache_dir=settings.MODEL_CACHE_DIR)
    backend = factory.exact(name)
    runtime = ModelRuntime(
        backend=backend,
        labels=list(loaded.model.targets),
        model_version=identity.version,
        weights_sha256=loaded.sha256,
        weights=loaded.kind,
        load_ms=0.0,
        extra={"threads": threads, "device": device, "weights_ms": round(weights_ms)},
        precision_requested=requested,
        reference_preprocessing=settings.PREPROCESS == "reference",
    )
    if requested == "fast":
        _apply_fast_mode(runtime, factory, name=name, batch_size=config.batch_max_size)
        if not runtime.fast_guard or not runtime.fast_guard["kept"]:
            _run_the_default(runtime, factory, name=name)
    runtime.extra["export_ms"] = round(factory.export_ms)
    if runtime.backend.name != "torch":
        del loaded, factory  # the torch module is no longer needed: its memory goes back
        gc.collect()
    runtime.warm_up((runtime.engine or config).batch_max_size)
    runtime.load_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "event=model_loaded model_version=%s backend=%s precision=%s precision_requested=%s "
        "preprocessing=%s device=%s threads=%d load_ms=%.0f export_ms=%.0f",
        runtime.model_version,
        runtime.backend.name,
        runtime.backend.precision,
        requested,
        runtime.preprocessing,
        device,
        threads,
        runtime.load_ms,
        runtime.extra["export_ms"],
    )
    return runtime


def _apply_fast_mode(runtime: ModelRuntime, factory: BackendFactory, *, name: str, batch_size: int) -> None:
    from django.conf import settings

    caps = ladder.capabilities()
    images = guard.calibration_images(settings.MODEL_CALIBRATION_DIR)
    default = runtime.backend

    def calibration() -> tuple[np.ndarray, Predict]:
        # Quantization calibrates on the exact inputs and their mirror images (more statistics).
        arrays = [preprocess(data) for data in images]
        return np.stack(arrays + [a[:, :, ::-1].copy() for a in arrays]), default.predict

    rungs = factory.rungs(
        name,
        caps=caps,
        candidates=list(settings.FAST_CANDIDATES),
        calibration=calibration,
        limit=settings.FAST_MAX_ABS_DIFF,
        int8_budget_seconds=settings.FAST_INT8_BUDGET_SECONDS,
    )
    outcome = ladder.climb(
        rungs,
        default=default,
        images=images,
        exact_preprocess=preprocess,
        fast_preprocess=preprocess_fast if settings.FAST_PREPROCESS else preprocess,
        limit=settings.FAST_MAX_ABS_DIFF,
        batch_size=batch_size,
        timing_seconds=settings.FAST_TIMING_SECONDS,
        min_speedup=settings.FAST_MIN_SPEEDUP,
    )
    runtime.fast_guard = outcome.fast_guard(limit=settings.FAST_MAX_ABS_DIFF, images=len(images))
    # For operators and the bench (not in results): what the machine offered, and each rung's detail.
    runtime.extra["fast_ladder"] = {
        "cpu_flags": list(caps.cpu_flags),
        "openvino_capabilities": sorted(caps.openvino),
        "tried": [{"precision": t.precision, "detail": t.detail, **t.extra} for t in outcome.tried],
    }
    guard_info = runtime.fast_guard
    if outcome.backend is not None:
        runtime.backend = outcome.backend
        runtime.fast_preprocessing = bool(settings.FAST_PREPROCESS)
        logger.info(
            "event=fast_kept backend=%s precision=%s max_abs_diff=%s limit=%s images=%d tried=%s",
            outcome.backend.name,
            outcome.backend.precision,
            guard_info["max_abs_diff"],
            guard_info["limit"],
            guard_info["images"],
            _tried_summary(guard_info["tried"]),
        )
    else:
        logger.warning(
            "event=fast_refused running=%s/%s reason=%r max_abs_diff=%s limit=%s images=%d tried=%s",
            runtime.backend.name,
            runtime.backend.precision,
            guard_info["reason"],
            guard_info["max_abs_diff"],
            guard_info["limit"],
            guard_info["images"],
            _tried_summary(guard_info["tried"]),
        )


def _tried_summary(tried: list[dict]) -> str:
    return ",".join(
        f"{t['precision']}:{'kept' if t['kept'] else 'refused'}:{t['max_abs_diff']}:{t['ms_per_image']}"
        for t in tried
    )


def _run_the_default(runtime: ModelRuntime, factory: BackendFactory, *, name: str) -> None:
    """Nothing faster kept: run what a worker started without fast mode runs (backend, batch size,
    threads, preprocessing), so fast is never a slower fp32 variant of the default."""
    default = engine_config(precision=FP32)
    runtime.engine = default
    if default.backend != name and default.backend in BACKENDS:
        threads = configure_threads(default.threads)
        factory.threads = threads
        runtime.backend = factory.exact(default.backend)
        runtime.extra["threads"] = threads
    runtime.fast_preprocessing = False


__all__ = ["BACKENDS", "FP16", "ModelRuntime", "configure_threads", "load_runtime"]
