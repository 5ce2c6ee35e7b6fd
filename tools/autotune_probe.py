"""The first-start tune, `before` against `background` (docs/performance.md): one worker's start
with a full queue, time to its first result and results in its first minute.

    python -m tools.autotune_probe off|before|background

One process plays the start: the Celery main process's hook (autotune.first_start, its real child
process, CXRQ_AUTOTUNE_BUDGET_S), then the pool child's load_runtime(engine_config()) and batches
back to back until 60 s after the start. It runs on a copy of the model cache without
autotune.json and with a tuned file that has no entry for this CPU, so the tune runs. The batches
run without the claim-ahead overlap (the same for all three modes).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

WINDOW_S = 60.0


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "before"
    if mode not in ("off", "before", "background"):
        raise SystemExit("usage: python -m tools.autotune_probe off|before|background")
    root = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="cxrq-autotune-probe-"))
    cache = work / "models"
    shutil.copytree(root / "var" / "models", cache, ignore=shutil.ignore_patterns("autotune*", "int8"))
    (work / "tuned.json").write_text(json.dumps({"format": 2, "hosts": {}}))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="backend.settings.dev",
        CXRQ_MODEL_CACHE_DIR=str(cache),
        CXRQ_TUNED_CONFIG=str(work / "tuned.json"),
        CXRQ_AUTOTUNE_BUDGET_S="0" if mode == "off" else os.environ.get("CXRQ_AUTOTUNE_BUDGET_S", "30"),
        CXRQ_LOG_LEVEL="WARNING",
    )
    t0 = time.monotonic()
    import django

    django.setup()
    from django.conf import settings

    from worker.runtime import autotune
    from worker.runtime.guard import calibration_images
    from worker.runtime.measure import run_stream
    from worker.runtime.model import load_runtime
    from worker.runtime.prep_pool import PreprocessPool
    from worker.runtime.tuned import engine_config

    child = autotune.first_start(mode=None if mode == "off" else mode)
    tuned_s = time.monotonic() - t0
    config = engine_config()
    runtime = load_runtime(config)
    loaded_s = time.monotonic() - t0
    images = calibration_images(settings.MODEL_CALIBRATION_DIR)
    pool = PreprocessPool(config.preprocess_workers)
    done, first, i = 0, None, 0
    while time.monotonic() - t0 < WINDOW_S:
        batch = [images[(i + k) % len(images)] for k in range(config.batch_max_size)]
        i += len(batch)
        run_stream(
            batch, preprocess=runtime.preprocess, predict=runtime.predict, batch_size=len(batch), pool=pool
        )
        now = time.monotonic() - t0
        if now <= WINDOW_S:
            done += len(batch)
        first = first or now
    pool.shutdown()
    cached = cache / "autotune.json"
    print(
        json.dumps(
            {
                "mode": mode,
                "tune_s": round(tuned_s, 1),
                "loaded_s": round(loaded_s, 1),
                "first_result_s": round(first or 0.0, 1),
                "results_60s": done,
                "img_s_after_load": round(done / max(1e-9, WINDOW_S - loaded_s), 2),
                "config": {
                    "backend": config.backend,
                    "threads": config.threads,
                    "batch": config.batch_max_size,
                },
                "tune_child_exit": child.poll() if child is not None and mode == "background" else None,
                "load_avg": os.getloadavg(),
                "cache": json.loads(cached.read_text())["hosts"] if cached.exists() else None,
            }
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
