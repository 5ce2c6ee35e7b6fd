"""A fast, deterministic stand-in for the model, for reliability and load tests only.

It keeps the real pipeline around the forward pass (claim, decode, preprocess,
store) and replaces DenseNet121 with arithmetic on the preprocessed image,
plus a configurable cost per batch. It can also play a poison image: an
all-white input (its centre at +1024 after normalisation) crashes the
process, hangs it, or raises, as CXRQ_FAKE_POISON says. Production settings
refuse it (CXRQ_MODEL_FAKE).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from backend.jobs.model_identity import LABELS, MODEL_NAME, PREPROCESS_VERSION, current_model_version
from worker.runtime.preprocess import INPUT_SIZE, preprocess

if TYPE_CHECKING:
    from worker.runtime.tuned import EngineConfig


class FakeBackend:
    name = "fake"
    precision = "fp32"

    def __init__(self, *, batch_ms: float, image_ms: float, poison: str):
        self.batch_ms, self.image_ms, self.poison = batch_ms, image_ms, poison
        rng = np.random.default_rng(0)
        self.weights = rng.normal(size=(16, len(LABELS))).astype(np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        centre = batch[:, :, 96:128, 96:128].reshape(len(batch), -1)
        if self.poison and bool((centre.min(axis=1) >= 1023.0).any()):
            if self.poison == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.poison == "hang":
                time.sleep(3600)
            raise RuntimeError("poison image")
        time.sleep((self.batch_ms + self.image_ms * len(batch)) / 1000)
        # 4x4 block means -> a fixed projection -> sigmoid: deterministic, image-dependent.
        n = len(batch)
        blocks = batch[:, 0, :224, :224].reshape(n, 4, 56, 4, 56).mean(axis=(2, 4)).reshape(n, 16) / 1024
        return 1 / (1 + np.exp(-(blocks @ self.weights)))


@dataclass
class FakeRuntime:
    backend: FakeBackend
    model_version: str
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    weights: str = "untrained"
    weights_sha256: str = "fake"
    load_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    engine: EngineConfig | None = None

    def provenance(self) -> dict[str, Any]:
        return {
            "model": MODEL_NAME,
            "model_version": self.model_version,
            "labels": self.labels,
            "weights": "untrained",
            "weights_sha256": "untrained",
            "preprocessing": PREPROCESS_VERSION,
            "backend": self.backend.name,
            "precision": self.backend.precision,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "precision": self.backend.precision,
            "precision_requested": self.backend.precision,
            "fast_guard": None,
            "weights": self.weights,
            "threads": 1,
            "load_ms": round(self.load_ms),
        }

    def preprocess(self, data: bytes) -> np.ndarray:
        return preprocess(data)  # the real exact pipeline: only the forward pass is faked

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.backend.predict(batch)

    def warm_up(self, batch_size: int) -> None:
        return None

    def images_per_second(self, batch_size: int) -> float:
        blank = np.zeros((batch_size, 1, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
        started = time.perf_counter()
        self.backend.predict(blank)  # the engine alone: a timing, not a batch of the worker's
        return batch_size / max(time.perf_counter() - started, 1e-9)


def load_fake_runtime() -> FakeRuntime:
    from django.conf import settings

    return FakeRuntime(
        backend=FakeBackend(
            batch_ms=settings.FAKE_BATCH_MS, image_ms=settings.FAKE_IMAGE_MS, poison=settings.FAKE_POISON
        ),
        model_version=current_model_version(),
    )
