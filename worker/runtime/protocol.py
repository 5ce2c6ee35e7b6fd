"""What the worker needs of a model runtime. The real one (model.py) and the test stand-in
(fake.py) both implement it; the inference handler (worker/handler.py) uses nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from worker.runtime.tuned import EngineConfig


class Runtime(Protocol):
    model_version: str
    labels: list[str]
    # The engine configuration it runs, where it differs from the one it was loaded with (fast mode
    # with no faster precision kept runs the default's batch size and wait); None: as loaded.
    engine: EngineConfig | None

    def preprocess(self, data: bytes) -> np.ndarray:
        """Stored bytes -> one model input (1 x 224 x 224, float32)."""
        ...

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """N inputs -> N x len(labels) probabilities."""
        ...

    def provenance(self) -> dict[str, Any]:
        """What every result records about the model that produced it."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the worker reports in its heartbeat (backend, precision, weights, ...)."""
        ...

    def warm_up(self, batch_size: int) -> None: ...

    def images_per_second(self, batch_size: int) -> float:
        """One timed forward pass of a full batch of blank inputs through the engine: the worker's
        throughput before it has run a batch (what the waiting-time estimate divides by)."""
        ...
