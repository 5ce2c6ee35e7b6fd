"""The engine configuration a worker runs with: environment first, then the tuned file, then defaults.

`make tune` measures batching, threads, preprocessing workers, worker
concurrency and backend on a machine and writes the best of each precision to
worker/runtime/tuned.json (CXRQ_TUNED_CONFIG): "config" for fp32, "config_fast"
for fast mode. A setting given in the environment (CXRQ_BATCH_MAX_SIZE, ...)
always wins; a missing or unreadable file falls back to the built-in defaults.
Settings never read the file; the worker does, when it starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    backend: str = "onnxruntime"
    threads: int = 0  # 0: one per core
    preprocess_workers: int = 1
    batch_max_size: int = 8
    batch_max_wait_ms: int = 20
    worker_concurrency: int = 1
    precision: str = "fp32"

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)


# Each field and the Django setting that overrides it.
_SETTINGS = {
    "backend": "BACKEND",
    "threads": "TORCH_THREADS",
    "preprocess_workers": "PREPROCESS_WORKERS",
    "batch_max_size": "BATCH_MAX_SIZE",
    "batch_max_wait_ms": "BATCH_MAX_WAIT_MS",
    "worker_concurrency": "WORKER_CONCURRENCY",
}


def read_tuned(path: Path, precision: str) -> dict[str, Any]:
    """The tuned file's configuration for this precision ({} when there is none or it is unreadable)."""
    try:
        tuned = json.loads(path.read_text()) if path.is_file() else {}
        config = tuned.get("config_fast" if precision == "fast" else "config") or tuned.get("config") or {}
        return {k: v for k, v in dict(config).items() if k in _SETTINGS}
    except (ValueError, OSError, AttributeError, TypeError) as exc:
        logger.warning("event=tuned_config_unreadable path=%s error=%r (built-in defaults apply)", path, exc)
        return {}


def engine_config(*, precision: str | None = None) -> EngineConfig:
    """What a worker started now, with these settings, runs (precision: that of the settings)."""
    from django.conf import settings

    precision = precision or settings.PRECISION
    values: dict[str, Any] = read_tuned(settings.TUNED_CONFIG, precision)
    for name, setting in _SETTINGS.items():
        value = getattr(settings, setting)
        if value is not None:
            values[name] = value
    return EngineConfig(precision=precision, **values)
