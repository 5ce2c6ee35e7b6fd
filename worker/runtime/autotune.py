"""A worker's first start on a CPU nobody tuned: a short, bounded tune, cached for the next starts.

The committed tuned file (worker/runtime/tuned.json, `make tune`: the full ~10-minute sweep) holds
entries for the CPUs measured, and a worker applies only its own CPU's entry. On a CPU with none,
the Celery worker's main process runs this module in a child process before the pool starts
(CXRQ_AUTOTUNE_MODE=before, the default; docs/performance.md says why) or beside it
(`background`: the pool serves with the defaults, the result applies at the next start):

  python -m worker.runtime.autotune --deadline <epoch seconds>

It measures, with the worker's own pipeline (worker/runtime/measure.py) on the sample X-rays, the
configured backend and precision at a few batch sizes (1, 2, 4, 8) and intra-op thread counts
(one per core, and one), the built-in default first, keeps the best within the same p95
batch-latency budget `make tune` uses, and writes it to MODEL_CACHE_DIR/autotune.json under this
CPU's signature, with `"source": "autotune"`, the date and every measurement. Never the committed
file. engine_config() then prefers: environment > committed entry for this CPU > this cache's entry
for this CPU > defaults (worker/runtime/tuned.py).

Bounded: the whole child, imports and model loads included, ends by the deadline
(CXRQ_AUTOTUNE_BUDGET_S after the main process started it; 0 disables the tune); it stops
measuring between two streams and the main process kills it GRACE_S later at the latest. What it
measured by then is cached; nothing measured, nothing cached (defaults, and the next start tries
again). Two workers starting at once on one host tune once: the child holds an exclusive lock
(fcntl) on MODEL_CACHE_DIR/autotune.lock while it tunes; one that finds it held waits for the
result before the deadline (`before`) or leaves it to the holder (`background`). The cache is
written to a temporary file and renamed into place.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.runtime import cpu
from worker.runtime.cpu import CpuSignature
from worker.runtime.tuned import (
    AUTOTUNE_SOURCE,
    FORMAT,
    EngineConfig,
    autotune_cache_path,
    engine_config,
    host_entry,
    read_autotuned,
    read_tuned,
)

logger = logging.getLogger(__name__)

BATCH_SIZES = (8, 4, 2, 1)  # the built-in default (8) first: measured even if time runs short
P95_BUDGET_MS = 1000.0  # as `make tune`'s default --budget-ms
# After the deadline: one stream in hand (a few batches) and the child's exit. Then it is killed.
GRACE_S = 5.0
HOLDER_OVERRUN_S = 2.0  # < GRACE_S: how long past its deadline a tune may still be writing its result
LOCK_NAME = "autotune.lock"
MODES = ("before", "background")


# --- whether to tune -----------------------------------------------------------------------


def reason_not_to_tune(signature: CpuSignature | None = None) -> str | None:
    """Why a worker starting now needs no first-start tune (None: it does)."""
    from django.conf import settings

    signature = signature or cpu.current()
    precision = settings.PRECISION
    if settings.AUTOTUNE_BUDGET_S <= 0:
        return "disabled"
    if settings.BATCH_MAX_SIZE is not None and settings.TORCH_THREADS is not None:
        return "set_in_environment"
    if read_tuned(Path(settings.TUNED_CONFIG), precision, signature, warn=False):
        return "committed"
    if read_autotuned(autotune_cache_path(), precision, signature):
        return "cached"
    return None


# --- measuring ------------------------------------------------------------------------------


def candidates(base: EngineConfig, cores: int) -> list[EngineConfig]:
    """Thread counts (one per core, then one) x batch sizes, the built-in default first. A value
    set in the environment is not swept."""
    from django.conf import settings

    threads = (
        [settings.TORCH_THREADS] if settings.TORCH_THREADS is not None else sorted({cores, 1}, reverse=True)
    )
    batches = [settings.BATCH_MAX_SIZE] if settings.BATCH_MAX_SIZE is not None else list(BATCH_SIZES)
    return [base.replace(threads=t, batch_max_size=b) for t, b in itertools.product(threads, batches)]


def tune(
    *,
    deadline: float,
    load: Callable[[EngineConfig], Any],
    images: list[bytes],
    base: EngineConfig,
    cores: int,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Measure the candidates until `deadline` (clock's time) and return the measurements and the
    choice (None when nothing could be measured). Each runtime is loaded once per thread count;
    the time left is shared among the candidates still to measure."""
    from worker.runtime.measure import choose, measure

    todo = candidates(base, cores)
    rows: list[dict[str, Any]] = []
    skipped: list[EngineConfig] = []
    load_s = 0.0
    runtime, loaded_threads = None, None
    while todo and clock() < deadline:
        config = todo[0]
        if config.threads != loaded_threads:
            # A thread count needs its own runtime: skip it if there is no time to load and measure it.
            if runtime is not None and clock() + 2 * load_s >= deadline:
                skipped += [c for c in todo if c.threads == config.threads]
                todo = [c for c in todo if c.threads != config.threads]
                continue
            runtime = None
            gc.collect()
            started = clock()
            runtime = load(config)
            load_s, loaded_threads = clock() - started, config.threads
            continue
        left = deadline - clock()
        later_loads = load_s * len({c.threads for c in todo[1:] if c.threads != loaded_threads})
        seconds = max(0.2, (left - later_loads) / len(todo))
        m = measure(
            runtime,
            images,
            batch_size=config.batch_max_size,
            workers=config.preprocess_workers,
            seconds=seconds,
            deadline=deadline,
        )
        rows.append({"threads": config.threads, "batch_max_size": config.batch_max_size} | m)
        logger.info("event=autotune_measured %s", json.dumps(rows[-1]))
        todo.pop(0)
    best = choose(rows, P95_BUDGET_MS) if rows else None
    return {
        "chosen": best and {"threads": best["threads"], "batch_max_size": best["batch_max_size"]},
        "measured": best and {k: best[k] for k in ("img_s", "p95_batch_ms", "p50_batch_ms")},
        "candidates": rows,
        "complete": not todo and not skipped,
    }


# --- the cache ------------------------------------------------------------------------------


@contextmanager
def tune_lock(directory: Path, *, wait_until: float | None) -> Iterator[bool]:
    """Hold the host's tune lock (True), or not (False) when it stays held by another process
    until `wait_until` (time.monotonic(); None: do not wait)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_NAME, "w") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait_until is None or time.monotonic() >= wait_until:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_entry(path: Path, signature: CpuSignature, precision: str, result: dict, extra: dict) -> dict:
    """This CPU's entry in the cache (the other CPUs' kept), written atomically. Both precisions
    may share an entry: `config`/`measured`/`candidates` and their `_fast` twins."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    hosts = cached.get("hosts", {}) if isinstance(cached, dict) and cached.get("format") == FORMAT else {}
    entry = dict(host_entry({"format": FORMAT, "hosts": hosts}, signature) or {})
    suffix = "_fast" if precision == "fast" else ""
    entry |= {
        "source": AUTOTUNE_SOURCE,
        "cpu": signature.as_dict(),
        "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        f"config{suffix}": result["chosen"],
        f"measured{suffix}": result["measured"] | {"precision": precision} | extra,
        f"candidates{suffix}": result["candidates"],
    }
    hosts[signature.key] = entry
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autotune-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"format": FORMAT, "hosts": dict(sorted(hosts.items()))}, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return entry


# --- the tuning process ---------------------------------------------------------------------


def run(*, deadline_epoch: float, mode: str) -> str:
    """The child's work: lock, check again, tune, cache. Returns what happened (its exit line)."""
    from django.conf import settings

    started = time.monotonic()
    deadline = started + max(0.0, deadline_epoch - time.time())
    signature = cpu.current()
    if reason := reason_not_to_tune(signature):
        return f"skipped reason={reason}"
    cache_dir = Path(settings.MODEL_CACHE_DIR)
    # Before the pool starts, wait for another holder's result: until our deadline, and its last batch.
    wait_until = deadline + HOLDER_OVERRUN_S if mode == "before" else None
    with tune_lock(cache_dir, wait_until=wait_until) as held:
        if not held:
            return f"skipped reason=another_process_is_tuning waited_s={time.monotonic() - started:.1f}"
        if reason := reason_not_to_tune(signature):
            return f"skipped reason={reason}"  # the lock's holder before us tuned it
        from worker.lifecycle import load_runtime  # the worker's: the model, or the test stand-in
        from worker.runtime.guard import calibration_images

        images = calibration_images(settings.MODEL_CALIBRATION_DIR)
        if not images:
            return f"skipped reason=no_images dir={settings.MODEL_CALIBRATION_DIR}"
        base = engine_config()
        result = tune(
            deadline=deadline, load=load_runtime, images=images, base=base, cores=os.cpu_count() or 1
        )
        elapsed = round(time.monotonic() - started, 1)
        if result["chosen"] is None:
            return f"incomplete measured=0 elapsed_s={elapsed}"
        extra = {
            "backend": base.backend,
            "preprocess_workers": base.preprocess_workers,
            "complete": result["complete"],
            "budget_s": settings.AUTOTUNE_BUDGET_S,
            "elapsed_s": elapsed,
            "mode": mode,
            "p95_budget_ms": P95_BUDGET_MS,
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        }
        write_entry(autotune_cache_path(), signature, base.precision, result, extra)
        return (
            f"tuned config={json.dumps(result['chosen'], separators=(',', ':'))} "
            f"img_s={result['measured']['img_s']} measured={len(result['candidates'])} elapsed_s={elapsed}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.runtime.autotune", description=__doc__)
    parser.add_argument(
        "--deadline", type=float, help="epoch seconds (default: now + CXRQ_AUTOTUNE_BUDGET_S)"
    )
    parser.add_argument("--mode", choices=MODES, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
    import django

    django.setup()
    from django.conf import settings

    deadline = args.deadline or time.time() + settings.AUTOTUNE_BUDGET_S
    outcome = run(deadline_epoch=deadline, mode=args.mode or settings.AUTOTUNE_MODE)
    logger.info("event=autotune_done cpu=%r %s", cpu.current().key, outcome)
    print(f"autotune: {outcome}", flush=True)


# --- the worker's side ----------------------------------------------------------------------


def first_start(*, mode: str | None = None) -> subprocess.Popen | None:
    """In the worker's main process, before its pool starts: start the bounded tune when this CPU
    needs one. `before`: wait for it (at most the budget, then GRACE_S, then it is killed);
    `background`: return at once (the child is returned, to be waited on or left)."""
    from django.conf import settings

    mode = mode or settings.AUTOTUNE_MODE
    signature = cpu.current()
    if reason := reason_not_to_tune(signature):
        logger.debug("event=autotune_skipped reason=%s", reason)
        return None
    budget = settings.AUTOTUNE_BUDGET_S
    logger.info(
        "event=autotune_started cpu=%r budget_s=%s mode=%s (no tuned entry for this CPU; `make tune` is the full sweep)",
        signature.key,
        budget,
        mode,
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.runtime.autotune",
            "--deadline",
            str(time.time() + budget),
            "--mode",
            mode,
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=os.environ
        | {"DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "backend.settings.dev")},
    )
    if mode == "background":
        threading.Thread(target=child.wait, name="cxrq-autotune-reaper", daemon=True).start()
        return child
    try:
        child.wait(timeout=budget + GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        logger.warning(
            "event=autotune_killed budget_s=%s (defaults apply; the next start tries again)", budget
        )
    return child


if __name__ == "__main__":
    main()
