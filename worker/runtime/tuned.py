"""The engine configuration a worker runs with: environment first, then the tuned file's entry for
this CPU, then defaults.

`make tune` measures batching, threads, preprocessing workers, worker concurrency and backend on a
machine and writes the best of each precision to worker/runtime/tuned.json (CXRQ_TUNED_CONFIG),
under the machine's CPU signature (worker/runtime/cpu.py: model, cores, the SIMD flags that
matter): `{"format": 2, "hosts": {"<signature>": {"cpu", "config", "config_fast", ...}}}`, one
entry per CPU measured. A worker applies only the entry of its own CPU; on a CPU with no entry it
runs the built-in defaults and says so (event=tuned_config_not_for_this_cpu): settings measured on
one CPU are never applied to another. A file of the old, unkeyed shape says nothing of its CPU's
flags, so it is not applied either. A setting given in the environment (CXRQ_BATCH_MAX_SIZE, ...)
always wins; a missing or unreadable file falls back to the built-in defaults. Settings never read
the file; the worker does, when it starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.runtime import cpu
from worker.runtime.cpu import CpuSignature

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


FORMAT = 2


def host_entry(tuned: dict, signature: CpuSignature) -> dict | None:
    """The tuned file's entry for this CPU, or None."""
    if tuned.get("format") != FORMAT:
        return None  # the old, unkeyed shape: measured on a CPU it does not name
    entry = (tuned.get("hosts") or {}).get(signature.key)
    return dict(entry) if entry else None


def read_tuned(path: Path, precision: str, signature: CpuSignature | None = None) -> dict[str, Any]:
    """This CPU's tuned configuration for this precision ({} when there is none or it is unreadable)."""
    signature = signature or cpu.current()
    try:
        tuned = json.loads(path.read_text()) if path.is_file() else {}
        entry = host_entry(tuned, signature)
        if entry is None:
            if tuned:
                hosts = sorted((tuned.get("hosts") or {}) if tuned.get("format") == FORMAT else ["(unkeyed)"])
                logger.warning(
                    "event=tuned_config_not_for_this_cpu path=%s cpu=%r tuned_for=%r (built-in defaults apply;"
                    " `make tune` measures this CPU)",
                    path,
                    signature.key,
                    hosts,
                )
            return {}
        config = entry.get("config_fast" if precision == "fast" else "config") or entry.get("config") or {}
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
