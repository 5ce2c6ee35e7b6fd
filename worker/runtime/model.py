"""Load the model once per worker process, warm it up, and describe it.

`load_runtime()` is the only entry point: it resolves the weights from
settings (official and verified, or the fallback where allowed), builds the
configured backend and runs one warm-up batch before the worker takes work.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from worker.model_identity import (
    MODEL_NAME,
    PREPROCESS_VERSION,
    UNTRAINED,
    model_version_for,
    weights_spec_from_settings,
)
from worker.runtime import fallback, weights
from worker.runtime.backends import Backend, TorchBackend
from worker.runtime.preprocess import INPUT_SIZE

logger = logging.getLogger(__name__)


@dataclass
class ModelRuntime:
    backend: Backend
    labels: list[str]
    model_version: str
    weights_sha256: str  # sha256 of the loaded file
    weights: str  # "official" or "untrained"
    load_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        import torchxrayvision as xrv

        return {
            "model": MODEL_NAME,
            "model_version": self.model_version,
            "labels": self.labels,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256 if self.weights != UNTRAINED else UNTRAINED,
            "fallback_weights_sha256": self.weights_sha256 if self.weights == UNTRAINED else None,
            "torchxrayvision": xrv.__version__,
            "torch": torch.__version__,
            "preprocessing": PREPROCESS_VERSION,
            "backend": self.backend.name,
            "precision": self.backend.precision,
        }

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


def load_runtime() -> ModelRuntime:
    from django.conf import settings

    started = time.perf_counter()
    threads = configure_threads(settings.TORCH_THREADS)
    spec = weights_spec_from_settings()
    if spec.is_official:
        assert spec.path is not None
        model = weights.load_official(spec.path, spec.sha256)
        sha, kind = spec.sha256, "official"
    else:
        model, sha = fallback.load_or_build(
            cache_dir=settings.MODEL_CACHE_DIR, calibration_dir=settings.MODEL_CALIBRATION_DIR
        )
        kind = UNTRAINED
        logger.warning("event=untrained_model weights=untrained sha256=%s results_marked=untrained", sha)
    runtime = ModelRuntime(
        backend=TorchBackend(model),
        labels=list(model.targets),
        model_version=model_version_for(spec),
        weights_sha256=sha,
        weights=kind,
        load_ms=0.0,
        extra={"threads": threads},
    )
    runtime.warm_up(settings.BATCH_MAX_SIZE)
    runtime.load_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "event=model_loaded model_version=%s backend=%s precision=%s threads=%d load_ms=%.0f",
        runtime.model_version,
        runtime.backend.name,
        runtime.backend.precision,
        threads,
        runtime.load_ms,
    )
    return runtime
