"""Load the model once per worker process, warm it up, and describe it.

`load_runtime()` is the only entry point: it resolves the weights from
settings (official and verified, or the fallback where allowed), exports them
to ONNX on first start (cached by weights sha256, worker/runtime/export.py),
builds the configured backend, runs the fast-mode guard when fast mode is
asked for (worker/runtime/guard.py), and runs one warm-up batch before the
worker takes work.

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
from worker.runtime import export, fallback, guard, weights
from worker.runtime.backends import (
    BF16,
    FP16,
    FP32,
    Backend,
    Head,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    TorchBackend,
    op_threshs_of,
)
from worker.runtime.decode import decode
from worker.runtime.fast_preprocess import FAST_PREPROCESS_NAME, preprocess_fast
from worker.runtime.preprocess import INPUT_SIZE, normalize, preprocess, reference_model_input
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
        return self._with_reexport(lambda: self._cpu_backend(name, FP32))

    def fast(self, name: str) -> tuple[Backend | None, str]:
        """The fast backend for this machine, or (None, why not)."""
        if self.device == "cuda":
            return TorchBackend(self.loaded.model, device="cuda", precision=FP16), ""
        if name in ("openvino", "onnxruntime") and _openvino_bf16():
            # ONNX Runtime has no fast bf16 kernels on the CPU: its fast mode is OpenVINO's.
            return self._with_reexport(lambda: self._cpu_backend("openvino", BF16)), ""
        if name == "torch" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return TorchBackend(self.loaded.model, precision=BF16), ""
        return None, "no bf16 support on this CPU"

    def _cpu_backend(self, name: str, precision: str) -> Backend:
        if name == "onnxruntime":
            files = self.onnx_files(("logits",))
            return OnnxRuntimeBackend(files["logits"], self.op_threshs, threads=self.threads)
        if name == "openvino":
            return OpenVinoBackend(
                self.onnx_files(("logits",) if precision == FP32 else ("stem", "body")),
                self.op_threshs,
                threads=self.threads,
                precision=precision,
                head=Head(self.loaded.model) if precision == BF16 else None,
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


def _openvino_bf16() -> bool:
    try:
        from worker.runtime.backends import openvino_supports_bf16

        return openvino_supports_bf16()
    except ImportError:
        return False


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
    runtime.extra["export_ms"] = round(factory.export_ms)
    if runtime.backend.name != "torch":
        del loaded, factory  # the torch module is no longer needed: its memory goes back
        gc.collect()
    runtime.warm_up(config.batch_max_size)
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

    fast, why_not = factory.fast(name)
    if fast is None:
        verdict = guard.GuardVerdict(
            kept=False,
            max_abs_diff=None,
            mean_abs_diff=None,
            limit=settings.FAST_MAX_ABS_DIFF,
            images=0,
            ms=0.0,
            reason=why_not,
        )
    else:
        fast_pre = preprocess_fast if settings.FAST_PREPROCESS else preprocess
        verdict = guard.check_fast(
            images=guard.calibration_images(settings.MODEL_CALIBRATION_DIR),
            exact=(preprocess, runtime.backend.predict),
            fast=(fast_pre, fast.predict),
            limit=settings.FAST_MAX_ABS_DIFF,
            batch_size=max(1, batch_size),
        )
    runtime.fast_guard = {
        "backend": fast.name if fast else None,
        "precision": fast.precision if fast else None,
    }
    runtime.fast_guard |= verdict.as_dict()
    if verdict.kept and fast is not None:
        runtime.backend = fast
        runtime.fast_preprocessing = bool(settings.FAST_PREPROCESS)
        logger.info(
            "event=fast_kept backend=%s precision=%s max_abs_diff=%s limit=%s images=%d",
            fast.name,
            fast.precision,
            verdict.max_abs_diff,
            verdict.limit,
            verdict.images,
        )
    else:
        logger.warning(
            "event=fast_refused running=%s/%s reason=%r max_abs_diff=%s limit=%s images=%d",
            runtime.backend.name,
            runtime.backend.precision,
            verdict.reason,
            verdict.max_abs_diff,
            verdict.limit,
            verdict.images,
        )


__all__ = ["BACKENDS", "FP16", "ModelRuntime", "configure_threads", "load_runtime"]
