"""`make tune`: measure the batching and threading that fit this machine, and write them down.

Like Triton's Model Analyzer: sweep the knobs on the machine that
will serve, keep the configuration with the best throughput whose p95 batch
latency stays within a budget, and write it to the file the worker reads
(CXRQ_TUNED_CONFIG, default worker/runtime/tuned.json). Environment variables
still override each value. This is the full sweep (about ten minutes); a worker on a CPU
with no entry here runs a short, bounded one at first start and caches it apart
(worker/runtime/autotune.py); an entry written here wins over that cache.

Swept, on the sample X-rays, with the worker's own pipeline (worker/runtime/measure.py,
which a worker's bounded first-start tune, worker/runtime/autotune.py, measures with too:
preprocessing pool, claim-ahead, one forward pass per batch):
  backend                 onnxruntime, openvino (fp32; fast mode is opt-in)
  intra-op threads        1 .. cores
  preprocessing workers   0 (inline), 1, 2
  BATCH_MAX_SIZE          1, 2, 4, 8, 16 (on a CUDA GPU: torch, 8 ... 128)
  worker concurrency      1, and cores processes of one thread each
  BATCH_MAX_WAIT_MS       0, 5, 10, 20, 50, under Poisson arrivals at 70% of the
                          chosen configuration's throughput (lowest p95 job latency)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tools.bench import ROOT, _setup_django, load_samples, machine
from worker.runtime import cpu
from worker.runtime.measure import choose, measure
from worker.runtime.tuned import FORMAT, host_entry

BATCH_SIZES = (1, 2, 4, 8, 16)
WORKERS = (0, 1, 2)
WAITS_MS = (0, 5, 10, 20, 50)
BACKENDS = ("onnxruntime", "openvino")
CUDA_BATCH_SIZES = (8, 16, 32, 64, 128)


def _cuda() -> bool:
    from django.conf import settings

    from worker.runtime.model import resolve_device

    return resolve_device(settings.DEVICE) == "cuda"


def _runtime(backend: str, threads: int, precision: str = "fp32"):
    from worker.runtime.model import load_runtime
    from worker.runtime.tuned import engine_config

    return load_runtime(engine_config(precision=precision).replace(backend=backend, threads=threads))


_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
import django; django.setup()
from tools.tune import _runtime, measure
from tools.bench import load_samples
cfg = json.loads(sys.argv[1])
rt = _runtime(cfg["backend"], cfg["threads"], cfg.get("precision", "fp32"))
_, images, _ = load_samples()
measure(rt, images, batch_size=cfg["batch_max_size"], workers=cfg["preprocess_workers"], seconds=0.5)
print("ready", flush=True)
sys.stdin.readline()  # every child starts measuring at the same moment
print(json.dumps(measure(rt, images, batch_size=cfg["batch_max_size"], workers=cfg["preprocess_workers"],
                         seconds=cfg["seconds"])), flush=True)
"""


def measure_concurrent(cfg: dict, processes: int, seconds: float) -> dict:
    """`processes` worker processes side by side, as Celery prefork runs them."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", CXRQ_LOG_LEVEL="WARNING")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(cfg | {"seconds": seconds})],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            while child.stdout.readline().strip() != "ready":
                if child.poll() is not None:
                    raise RuntimeError(f"tuning child exited with {child.returncode}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [
            json.loads(child.communicate(timeout=300)[0].strip().splitlines()[-1]) for child in children
        ]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    return {
        "img_s": round(sum(r["img_s"] for r in results), 2),
        "p95_batch_ms": max(r["p95_batch_ms"] for r in results),
        "p50_batch_ms": max(r["p50_batch_ms"] for r in results),
    }


def sweep_wait(
    runtime, images: list[bytes], cfg: dict, capacity_img_s: float, *, seconds: float, waits=WAITS_MS
) -> list[dict]:
    """p95 job latency (arrival -> result) for each wait, Poisson arrivals at 70% of capacity.

    The loop is Processor.drain's: wait up to BATCH_MAX_WAIT_MS for a full batch, take at
    most BATCH_MAX_SIZE, preprocess and run them.
    """
    from worker.runtime.prep_pool import PreprocessPool

    rate = 0.7 * capacity_img_s
    rng = np.random.default_rng(0)
    pool = PreprocessPool(cfg["preprocess_workers"])
    size = cfg["batch_max_size"]
    rows = []
    arrivals = np.cumsum(rng.exponential(1 / rate, size=int(rate * seconds) + 1))  # the same for every wait
    try:
        for wait_ms in waits:
            start = time.perf_counter()
            latencies, taken = [], 0
            while taken < len(arrivals):
                now = time.perf_counter() - start
                if arrivals[taken] > now:
                    time.sleep(arrivals[taken] - now)
                    continue
                deadline = now + wait_ms / 1000
                while (
                    time.perf_counter() - start < deadline
                    and np.searchsorted(arrivals, time.perf_counter() - start) - taken < size
                ):
                    time.sleep(0.001)
                ready = int(np.searchsorted(arrivals, time.perf_counter() - start, side="right"))
                batch = list(range(taken, min(ready, taken + size)))
                taken += len(batch)
                data = [images[i % len(images)] for i in batch]
                prepared = pool.submit([(i, (lambda d=d: d)) for i, d in enumerate(data)], runtime.preprocess)
                runtime.predict(np.stack([o.array for _, o in prepared.results()]))
                done = time.perf_counter() - start
                latencies += [(done - arrivals[i]) * 1000 for i in batch]
            rows.append(
                {
                    "batch_max_wait_ms": wait_ms,
                    "arrival_img_s": round(rate, 1),
                    "p50_job_ms": round(float(np.percentile(latencies, 50)), 1),
                    "p95_job_ms": round(float(np.percentile(latencies, 95)), 1),
                }
            )
    finally:
        pool.shutdown()
    return rows


def remeasure_finalists(rows: list[dict], images: list[bytes], *, seconds: float, rounds: int) -> list[dict]:
    """Measure the best configurations again, in turns, and keep the mean: one short measurement
    on a shared machine is noisy (5-10%), the choice should not be. Four single-process
    configurations and the two best multi-process ones are finalists."""
    single = sorted((r for r in rows if r["worker_concurrency"] == 1), key=lambda r: -r["img_s"])[:4]
    multi = sorted((r for r in rows if r["worker_concurrency"] > 1), key=lambda r: -r["img_s"])[:2]
    runtimes: dict = {}
    for _ in range(rounds):
        for r in single + multi:
            if r["worker_concurrency"] > 1:
                cfg = {k: r[k] for k in ("backend", "threads", "preprocess_workers", "batch_max_size")}
                m = measure_concurrent(
                    cfg | {"precision": r.get("precision", "fp32")}, r["worker_concurrency"], seconds
                )
            else:
                key = (r["backend"], r["threads"], r.get("precision", "fp32"))
                if key not in runtimes:
                    runtimes[key] = _runtime(*key)
                m = measure(
                    runtimes[key],
                    images,
                    batch_size=r["batch_max_size"],
                    workers=r["preprocess_workers"],
                    seconds=seconds,
                )
            r.setdefault("repeats", [r["img_s"]]).append(m["img_s"])
            r["p95_batch_ms"] = max(r["p95_batch_ms"], m["p95_batch_ms"])
    for r in single + multi:
        r["img_s"] = round(float(np.mean(r["repeats"])), 2)
    return rows


CONFIG_KEYS = ("backend", "threads", "preprocess_workers", "batch_max_size", "worker_concurrency")


def sweep(
    precision: str, images: list[bytes], args, *, backends, threads_options, workers_options, batch_options
):
    """Stage one (every combination, one process), stage two (one single-threaded process per
    core), then the finalists again. Rows carry their precision."""
    cores = os.cpu_count() or 1
    rows: list[dict] = []
    for backend, threads in itertools.product(backends, threads_options):
        runtime = _runtime(backend, threads, precision)
        if runtime.backend.precision == "fp32" and precision == "fast":
            print(f"fast mode refused by the guard ({runtime.fast_guard}): not tuned", flush=True)
            return []
        for workers, batch in itertools.product(workers_options, batch_options):
            cfg = {"precision": precision, "backend": backend, "threads": threads}
            cfg |= {"preprocess_workers": workers, "batch_max_size": batch, "worker_concurrency": 1}
            rows.append(
                cfg | measure(runtime, images, batch_size=batch, workers=workers, seconds=args.seconds)
            )
            print(json.dumps(rows[-1]), flush=True)
    if cores > 1 and not args.quick and not _cuda():
        single = sorted((r for r in rows if r["threads"] == 1), key=lambda r: -r["img_s"])[:4]
        for top in single:
            cfg = {k: top[k] for k in ("backend", "threads", "preprocess_workers", "batch_max_size")}
            rows.append(
                {"precision": precision, **cfg, "worker_concurrency": cores}
                | measure_concurrent(cfg | {"precision": precision}, cores, args.seconds)
            )
            print(json.dumps(rows[-1]), flush=True)
    return remeasure_finalists(rows, images, seconds=args.seconds, rounds=1 if args.quick else 2)


def settle(rows: list[dict], precision: str, images: list[bytes], args) -> dict:
    """The chosen configuration of one precision, with its batch wait measured."""
    best = choose(rows, args.budget_ms, multi_process=args.multi_process)
    config = {k: best[k] for k in CONFIG_KEYS}
    runtime = _runtime(config["backend"], config["threads"], precision)
    waits = sweep_wait(
        runtime,
        images,
        config,
        best["img_s"] / config["worker_concurrency"],
        seconds=1.0 if args.quick else 8.0,
        waits=(0, 20) if args.quick else WAITS_MS,
    )
    # Waiting only pays when it buys bigger batches: the shortest wait within 10% of the best p95.
    best_p95 = min(r["p95_job_ms"] for r in waits)
    config["batch_max_wait_ms"] = min(
        r["batch_max_wait_ms"] for r in waits if r["p95_job_ms"] <= 1.1 * best_p95
    )
    multi = [r for r in rows if r["worker_concurrency"] > 1 and r["p95_batch_ms"] <= args.budget_ms]
    alternative = max(multi, key=lambda r: r["img_s"]) if multi else None
    return {
        "config": config,
        "measured": {k: best[k] for k in ("img_s", "p95_batch_ms", "p50_batch_ms")},
        "wait_sweep": waits,
        "multi_process_alternative": alternative
        and {
            **{k: alternative[k] for k in CONFIG_KEYS},
            "img_s": alternative["img_s"],
            "p95_batch_ms": alternative["p95_batch_ms"],
            "vs_chosen": f"{alternative['img_s'] / best['img_s'] - 1:+.0%}",
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget-ms", type=float, default=1000.0, help="p95 batch latency budget (default 1000)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per configuration")
    parser.add_argument("--out", type=Path, help="tuned file to write (default: settings.TUNED_CONFIG)")
    parser.add_argument("--quick", action="store_true", help="a small sweep, fp32 only (tests, smoke runs)")
    parser.add_argument(
        "--reuse", type=Path, help="choose again from the sweep in this tuned file (no re-measuring)"
    )
    parser.add_argument(
        "--multi-process",
        action="store_true",
        help="may choose several worker processes (only where the worker is started with CXRQ_WORKER_CONCURRENCY)",
    )
    args = parser.parse_args(argv)

    _setup_django()
    from django.conf import settings

    out = args.out or settings.TUNED_CONFIG
    cores = os.cpu_count() or 1
    _, images, _ = load_samples()
    options = {
        "backends": BACKENDS[:1] if args.quick else BACKENDS,
        "threads_options": [1] if args.quick else sorted({1, cores}),
        "workers_options": (0, 1) if args.quick else WORKERS,
        "batch_options": (1, 4) if args.quick else BATCH_SIZES,
    }
    fast_options = options | {"backends": ("openvino",), "batch_options": (2, 4, 8, 16)}
    if _cuda():
        # A GPU: torch on CUDA (fp16 in fast mode), large batches, the cores preprocess.
        options |= {"backends": ("torch",), "threads_options": [cores], "batch_options": CUDA_BATCH_SIZES}
        options["workers_options"] = tuple(sorted({1, 2, cores}))
        fast_options = options
    signature = cpu.current()
    if args.reuse:
        reused = json.loads(args.reuse.read_text())
        entry = host_entry(reused, signature) if reused.get("format") == FORMAT else reused
        if not entry:
            parser.error(f"{args.reuse} has no entry for this CPU ({signature.key})")
        rows = entry["sweep"]
    else:
        rows = sweep("fp32", images, args, **options)
        if not args.quick:
            rows += sweep("fast", images, args, **fast_options)
    tuned: dict = settle([r for r in rows if r.get("precision", "fp32") == "fp32"], "fp32", images, args)
    fast_rows = [r for r in rows if r.get("precision") == "fast"]
    if fast_rows:
        fast = settle(fast_rows, "fast", images, args)
        tuned |= {
            "config_fast": fast["config"],
            "measured_fast": fast["measured"],
            "wait_sweep_fast": fast["wait_sweep"],
            "multi_process_alternative_fast": fast["multi_process_alternative"],
        }
    tuned |= {
        "cpu": signature.as_dict(),
        "budget_ms": args.budget_ms,
        "machine": machine(),
        "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make tune" + (f" TUNE_ARGS='--reuse {args.reuse}'" if args.reuse else ""),
        "sweep": sorted(rows, key=lambda r: (r.get("precision", "fp32"), -r["img_s"])),
    }
    # This CPU's entry, beside the other CPUs' (a file of the old, unkeyed shape is replaced).
    try:
        existing = json.loads(Path(out).read_text())
    except (OSError, ValueError):
        existing = {}
    hosts = existing.get("hosts", {}) if existing.get("format") == FORMAT else {}
    hosts[signature.key] = tuned
    Path(out).write_text(
        json.dumps({"format": FORMAT, "hosts": dict(sorted(hosts.items()))}, indent=2) + "\n"
    )
    print()
    print(
        f"{'precision':9s} {'backend':12s} {'threads':>7s} {'workers':>7s} {'batch':>5s} {'procs':>5s} {'img/s':>7s} {'p95 batch ms':>12s}"
    )
    for r in sorted(rows, key=lambda r: -r["img_s"])[:20]:
        print(
            f"{r.get('precision', 'fp32'):9s} {r['backend']:12s} {r['threads']:7d} {r['preprocess_workers']:7d} "
            f"{r['batch_max_size']:5d} {r['worker_concurrency']:5d} {r['img_s']:7.1f} {r['p95_batch_ms']:12.1f}"
        )
    print(f"wait sweep (arrivals at 70% of capacity): {tuned['wait_sweep']}")
    print(f"CPU: {signature.key}")
    print(f"best within p95 <= {args.budget_ms:.0f} ms: {json.dumps(tuned['config'])} -> written to {out}")
    if "config_fast" in tuned:
        print(f"fast mode: {json.dumps(tuned['config_fast'])}")
    return tuned


if __name__ == "__main__":
    main()
