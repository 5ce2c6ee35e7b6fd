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

A CPU with no entry in the committed file gets a short, bounded tune at a worker's first start
(worker/runtime/autotune.py, CXRQ_AUTOTUNE_BUDGET_S), cached apart from the committed file, in
MODEL_CACHE_DIR/autotune.json, under the same signature and with `"source": "autotune"`. So the
order is: environment > the committed entry for this CPU > the cached autotune entry for this CPU >
built-in defaults. A cached entry for another CPU is never applied either.
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


AUTOTUNE_CACHE_NAME = "autotune.json"
AUTOTUNE_SOURCE = "autotune"


def autotune_cache_path() -> Path:
    """Where a worker's first-start tune caches its entries (not the committed file). The test
    stand-in (CXRQ_MODEL_FAKE) is tuned only when asked, and cached apart: never applied to the model."""
    from django.conf import settings

    name = AUTOTUNE_CACHE_NAME.replace(".json", "-fake.json") if settings.MODEL_FAKE else AUTOTUNE_CACHE_NAME
    return Path(settings.MODEL_CACHE_DIR) / name


def _config_of(entry: dict, precision: str, *, fall_back: bool) -> dict[str, Any]:
    config = entry.get("config_fast" if precision == "fast" else "config")
    if not config and fall_back:
        config = entry.get("config")
    return {k: v for k, v in dict(config or {}).items() if k in _SETTINGS}


def read_tuned(
    path: Path, precision: str, signature: CpuSignature | None = None, *, warn: bool = True
) -> dict[str, Any]:
    """This CPU's tuned configuration for this precision ({} when there is none or it is unreadable)."""
    signature = signature or cpu.current()
    try:
        tuned = json.loads(path.read_text()) if path.is_file() else {}
        entry = host_entry(tuned, signature)
        if entry is None:
            if tuned and warn:
                _warn_not_for_this_cpu(path, tuned, signature)
            return {}
        return _config_of(entry, precision, fall_back=True)
    except (ValueError, OSError, AttributeError, TypeError) as exc:
        if warn:
            logger.warning(
                "event=tuned_config_unreadable path=%s error=%r (built-in defaults apply)", path, exc
            )
        return {}


def _warn_not_for_this_cpu(path: Path, tuned: dict, signature: CpuSignature) -> None:
    hosts = sorted((tuned.get("hosts") or {}) if tuned.get("format") == FORMAT else ["(unkeyed)"])
    logger.warning(
        "event=tuned_config_not_for_this_cpu path=%s cpu=%r tuned_for=%r (built-in defaults apply;"
        " `make tune` measures this CPU)",
        path,
        signature.key,
        hosts,
    )


def read_autotuned(path: Path, precision: str, signature: CpuSignature | None = None) -> dict[str, Any]:
    """This CPU's cached first-start tune for this precision ({} when there is none). An entry
    tuned for the other precision is not applied: batch size and threads differ between them."""
    signature = signature or cpu.current()
    try:
        cached = json.loads(path.read_text()) if path.is_file() else {}
        entry = host_entry(cached, signature)
        if entry is None or entry.get("source") != AUTOTUNE_SOURCE:
            return {}
        return _config_of(entry, precision, fall_back=False)
    except (ValueError, OSError, AttributeError, TypeError) as exc:
        logger.warning("event=autotune_cache_unreadable path=%s error=%r (ignored)", path, exc)
        return {}


def tuned_values(precision: str, signature: CpuSignature | None = None) -> tuple[dict[str, Any], str]:
    """This CPU's tuned values for this precision, and where they come from: `committed` (the
    tuned file), `autotune` (the cached first-start tune) or `defaults` (neither)."""
    from django.conf import settings

    signature = signature or cpu.current()
    path = Path(settings.TUNED_CONFIG)
    committed = read_tuned(path, precision, signature, warn=False)
    if committed:
        return committed, "committed"
    cached = read_autotuned(autotune_cache_path(), precision, signature)
    if cached:
        return cached, AUTOTUNE_SOURCE
    read_tuned(path, precision, signature)  # logs why the committed file did not apply, if it says why
    return {}, "defaults"


def engine_config(*, precision: str | None = None) -> EngineConfig:
    """What a worker started now, with these settings, runs (precision: that of the settings)."""
    from django.conf import settings

    precision = precision or settings.PRECISION
    values, _source = tuned_values(precision)
    for name, setting in _SETTINGS.items():
        value = getattr(settings, setting)
        if value is not None:
            values[name] = value
    return EngineConfig(precision=precision, **values)
