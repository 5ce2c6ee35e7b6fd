"""Inference backends behind one small interface; which one runs is configuration."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Backend(Protocol):
    name: str
    precision: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, 224, 224) float32 -> (N, labels) probabilities after op_norm."""
        ...


class TorchBackend:
    """Eager torch on the CPU: inference_mode, channels_last, fixed thread count."""

    name = "torch"
    precision = "fp32"

    def __init__(self, model: torch.nn.Module, *, channels_last: bool = True):
        self.model = model.eval()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.model(x)
        return out.numpy()
