"""`make bench`: reference, default and fast side by side, in one process, on the sample X-rays.

  reference  torch eager fp32, batch size 1, torchxrayvision's own preprocessing
             (xrv normalize + XRayCenterCrop + XRayResizer): the reference system's setup
  default    what cxrq ships: load_runtime() with the settings as they are
             (tuned backend, batch size, threads, preprocessing workers)
  fast       the same with CXRQ_PRECISION=fast (the precision ladder decides, as in a worker:
             worker/runtime/ladder.py); when nothing faster is kept, fast *is* the default and
             is reported as such, not measured again
  fast:<p>   each precision the ladder tried and did not keep (bf16, int8...), built again and
             run through the same pipeline, so that a refused precision still shows its
             speed and its error

All three decode with worker.runtime.decode. default and fast run the
worker's pipeline: batches of BATCH_MAX_SIZE, preprocessing in the pool, the
next batch preprocessed while the model runs on this one. The configurations
take turns round by round, so a noisy neighbour slows all three alike.
Preprocessing alone is also timed image by image, reference and exact path
interleaved in one thread (preprocess_speedup).

The table goes to stdout; the last line is one JSON object. Cold start (a
fresh process: imports, weights, ONNX export or its cache, backend, first
result) and its RSS are measured in child processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "cxr"


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
    import django

    django.setup()


# --- the pipeline the worker runs, without the database ---------------------------------


# StreamStats and run_stream: worker/runtime/measure.py (the first-start tune measures with them too).
from worker.runtime.measure import StreamStats, run_stream  # noqa: E402

# --- the three configurations ------------------------------------------------------------


def load_samples(directory: Path = SAMPLES) -> tuple[list[str], list[bytes], list[str]]:
    """Every sample file that decode() accepts; the others are named as skipped."""
    from worker.runtime.decode import DecodeError, decode

    names, data, skipped = [], [], []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".dcm"):
            continue
        raw = path.read_bytes()
        try:
            decode(raw)
        except DecodeError as exc:
            skipped.append(f"{path.name} ({exc.code})")
            continue
        names.append(path.name)
        data.append(raw)
    return names, data, skipped


class Reference:
    """The reference system's setup: xrv preprocessing, torch eager fp32, one image at a time."""

    name = "reference"

    def __init__(self, model, threads: int):
        import torch

        self.model, self.threads, self.torch = model.eval(), threads, torch

    def preprocess(self, data: bytes) -> np.ndarray:
        from worker.runtime.decode import decode
        from worker.runtime.preprocess import normalize, reference_model_input

        arr, maxval = decode(data)
        return reference_model_input(normalize(arr, maxval))

    def run(self, images: Sequence[bytes]) -> StreamStats:
        torch = self.torch
        torch.set_num_threads(self.threads)  # every core, as the seed ran it
        stats = StreamStats()
        started = time.perf_counter()
        for data in images:
            t0 = time.perf_counter()
            x = self.preprocess(data)
            t1 = time.perf_counter()
            with torch.no_grad():
                probs = self.model(torch.from_numpy(x)[None]).numpy()
            t2 = time.perf_counter()
            stats.preprocess_ms.append((t1 - t0) * 1000)
            stats.inference_ms.append((t2 - t1) * 1000)
            stats.e2e_ms.append((t2 - t0) * 1000)
            stats.batch_ms.append((t2 - t0) * 1000)
            stats.probs.append(probs[0])
        stats.seconds = time.perf_counter() - started
        stats.images = len(images)
        return stats


class Pipeline:
    def __init__(self, name: str, runtime, *, batch_size: int, workers: int):
        from worker.runtime.prep_pool import PreprocessPool

        self.name, self.runtime, self.batch_size = name, runtime, batch_size
        self.pool = PreprocessPool(workers)

    def run(self, images: Sequence[bytes]) -> StreamStats:
        return run_stream(
            images,
            preprocess=self.runtime.preprocess,
            predict=self.runtime.predict,
            batch_size=self.batch_size,
            pool=self.pool,
        )


def _load(config):
    """A runtime for this engine configuration (worker/runtime/tuned.py), and its load time."""
    from worker.runtime.model import load_runtime

    started = time.perf_counter()
    runtime = load_runtime(config)
    return runtime, (time.perf_counter() - started) * 1000


def _reference_model():
    import torch
    import torchxrayvision as xrv
    from django.conf import settings

    from backend.jobs.model_identity import MODEL_NAME, current_identity
    from worker.runtime import fallback, weights

    identity = current_identity()
    path = weights.official_weights_path(
        identity, configured_path=settings.MODEL_WEIGHTS_PATH, allow_fallback=settings.MODEL_ALLOW_FALLBACK
    )
    if path is not None:
        return weights.load_official(path, identity.weights_sha256)
    meta = xrv.models.model_urls[MODEL_NAME]
    model = xrv.models.DenseNet(num_classes=len(meta["labels"]), op_threshs=torch.tensor(meta["op_threshs"]))
    model.load_state_dict(
        torch.load(fallback.cached_path(settings.MODEL_CACHE_DIR), map_location="cpu", weights_only=True)
    )
    return model.eval()


def preprocess_speedup(images: Sequence[bytes], reference: Reference, repeats: int) -> dict:
    """Reference vs exact preprocessing, image by image, interleaved, one thread."""
    from worker.runtime.preprocess import preprocess

    ref_s, ours_s, worst = 0.0, 0.0, 0.0
    for _ in range(repeats):
        for data in images:
            t0 = time.perf_counter()
            want = reference.preprocess(data)
            t1 = time.perf_counter()
            got = preprocess(data)
            t2 = time.perf_counter()
            ref_s += t1 - t0
            ours_s += t2 - t1
            worst = max(worst, float(np.abs(want - got).max()))
    n = repeats * len(images)
    return {
        "reference_ms": ref_s * 1000 / n,
        "default_ms": ours_s * 1000 / n,
        "speedup": ref_s / ours_s,
        "max_pixel_diff": worst,
    }


def breakdown(names: Sequence[str], images: Sequence[bytes], repeats: int = 5) -> dict:
    """Where an image's time goes: per sample, decode / reference resize / exact path / fast path;
    per backend and batch size, inference ms per image. Best of `repeats`, one thread for
    preprocessing, the configured threads for inference."""
    from django.conf import settings

    from backend.jobs.model_identity import current_identity
    from worker.runtime.decode import decode
    from worker.runtime.fast_preprocess import preprocess_fast
    from worker.runtime.model import BackendFactory, _load_weights
    from worker.runtime.preprocess import model_input, normalize, reference_model_input
    from worker.runtime.tuned import engine_config

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return round(min(times), 2)

    per_sample = {}
    for name, data in zip(names, images, strict=True):
        arr, maxval = decode(data)
        per_sample[name] = {
            "shape": list(arr.shape),
            "decode_ms": best(lambda data=data: decode(data)),
            "reference_normalize_crop_resize_ms": best(
                lambda arr=arr, maxval=maxval: reference_model_input(normalize(arr, maxval))
            ),
            "exact_normalize_crop_resize_ms": best(lambda arr=arr, maxval=maxval: model_input(arr, maxval)),
            "fast_path_total_ms": best(lambda data=data: preprocess_fast(data)),
        }
    loaded = _load_weights(current_identity())
    factory = BackendFactory(
        loaded,
        threads=engine_config().threads or os.cpu_count() or 1,
        device="cpu",
        cache_dir=settings.MODEL_CACHE_DIR,
    )
    from worker.runtime.preprocess import preprocess

    x = np.stack([preprocess(d) for d in images])
    backends = {
        "torch/fp32": factory.exact("torch"),
        "onnxruntime/fp32": factory.exact("onnxruntime"),
        "openvino/fp32": factory.exact("openvino"),
    }
    from worker.runtime import ladder
    from worker.runtime.model import BF16_SPLITS

    if not ladder.capabilities().bf16():
        backends["openvino/bf16"] = factory.bf16(BF16_SPLITS[0])
    inference = {}
    for label, backend in backends.items():
        for size in (1, 4, 8, 16):
            batch = np.concatenate([x] * (size // len(x) + 1))[:size]
            backend.predict(batch)
            inference[f"{label} b{size}"] = round(best(lambda b=batch, be=backend: be.predict(b)) / size, 2)
    return {"preprocessing": per_sample, "inference_ms_per_image": inference}


def tried_runtimes(fast_rt) -> list[tuple[dict, object]]:
    """Each precision the ladder tried, measured and did not keep, built again (quantized models
    come from their cache) as a runtime like fast_rt's: [(tried entry, runtime)]."""
    from django.conf import settings

    from backend.jobs.model_identity import current_identity
    from worker.runtime import guard, ladder
    from worker.runtime.model import BackendFactory, _load_weights
    from worker.runtime.preprocess import preprocess
    from worker.runtime.tuned import engine_config

    tried = (fast_rt.fast_guard or {}).get("tried") or []
    if not any(t["ms_per_image"] is not None and not t["kept"] for t in tried):
        return []
    loaded = _load_weights(current_identity())
    factory = BackendFactory(
        loaded, threads=fast_rt.extra.get("threads") or 1, device="cpu", cache_dir=settings.MODEL_CACHE_DIR
    )
    # The backend the default configuration runs on this CPU (fast's, when nothing faster was kept).
    default_backend = (fast_rt.engine or engine_config(precision="fp32")).backend
    default = factory.exact(default_backend)
    images = guard.calibration_images(settings.MODEL_CALIBRATION_DIR)

    def calibration():
        arrays = [preprocess(data) for data in images]
        return np.stack(arrays + [a[:, :, ::-1].copy() for a in arrays]), default.predict

    rungs = factory.rungs(
        default_backend,
        caps=ladder.capabilities(),
        candidates=list(settings.FAST_CANDIDATES),
        calibration=calibration,
        limit=settings.FAST_MAX_ABS_DIFF,
        int8_budget_seconds=settings.FAST_INT8_BUDGET_SECONDS,
    )
    out = []
    for entry, rung in zip(tried, rungs, strict=False):
        if entry["kept"] or entry["ms_per_image"] is None or rung.build is None:
            continue
        if (rung.precision, rung.detail) != (entry["precision"], entry["detail"]):
            continue
        backend = rung.build()
        out.append(
            (
                entry,
                dataclasses.replace(
                    fast_rt, backend=backend, fast_preprocessing=bool(settings.FAST_PREPROCESS)
                ),
            )
        )
    return out


def precision_table(rows: list[dict]) -> str:
    head = (
        f"{'precision':9s} {'backend':9s} {'kept':5s} {'img/s':>7s} {'max|dp|':>8s} {'guard':>8s} "
        f"{'ms/img':>7s} {'fp32':>7s}  detail; reason"
    )
    lines = [head, "-" * len(head)]
    for r in rows:

        def f(v, spec):
            return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0] or 0))

        lines.append(
            f"{r['precision']:9s} {r['backend']:9s} {'yes' if r['kept'] else 'no':5s} {f(r['img_s'], '7.1f')} "
            f"{f(r['max_abs_diff'], '8.4f')} {f(r['guard_max_abs_diff'], '8.4f')} "
            f"{f(r['ladder_ms_per_image'], '7.1f')} {f(r['ladder_fp32_ms_per_image'], '7.1f')}  "
            f"{r['detail']}; {r['reason']}"
        )
    return "\n".join(lines)


# --- cold start, in child processes -------------------------------------------------------

_COLD_CHILD = r"""
import os, sys, time, json, resource
t0 = float(sys.argv[1])
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
import django; django.setup()
import numpy as np
from worker.runtime.model import load_runtime
from worker.runtime.prep_pool import PreprocessPool
from worker.runtime.tuned import engine_config
t_import = time.time()
config = engine_config()
rt = load_runtime(config)
t_loaded = time.time()
data = [open(p, "rb").read() for p in sys.argv[2:]]
rt.predict(np.stack([rt.preprocess(data[0])]))
t_first = time.time()
pool = PreprocessPool(config.preprocess_workers)
batch = (data * config.batch_max_size)[: config.batch_max_size]
for _ in range(3):
    rt.predict(np.stack([o.array for _, o in pool.submit([(i, (lambda d=d: d)) for i, d in enumerate(batch)], rt.preprocess).results()]))
import psutil
print(json.dumps({
    "imports_s": t_import - t0, "load_ms": rt.load_ms, "export_ms": rt.extra.get("export_ms"),
    "first_result_s": t_first - t0, "rss_mb": psutil.Process().memory_info().rss / 2**20,
    "peak_rss_mb": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024,
    "backend": rt.backend.name, "precision": rt.backend.precision,
}))
"""


def cold_start(*, cache_dir: Path | None, precision: str, samples: Sequence[Path]) -> dict:
    env = dict(os.environ, CXRQ_PRECISION=precision, PYTHONWARNINGS="ignore")
    if cache_dir is not None:
        env["CXRQ_MODEL_CACHE_DIR"] = str(cache_dir)
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", _COLD_CHILD, repr(started), *map(str, samples)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- report ---------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def table(rows: list[tuple[str, str, StreamStats]]) -> str:
    head = (
        f"{'config':10s} {'backend/precision':36s} {'img/s':>7s} "
        f"{'prep p50':>9s} {'prep p95':>9s} {'infer p50':>10s} {'infer p95':>10s} "
        f"{'e2e p50':>8s} {'e2e p95':>8s}   (ms per image)"
    )
    lines = [head, "-" * len(head)]
    for name, what, s in rows:
        lines.append(
            f"{name:10s} {what:36s} {s.img_s:7.1f} "
            f"{_pct(s.preprocess_ms, 50):9.1f} {_pct(s.preprocess_ms, 95):9.1f} "
            f"{_pct(s.inference_ms, 50):10.1f} {_pct(s.inference_ms, 95):10.1f} "
            f"{_pct(s.e2e_ms, 50):8.1f} {_pct(s.e2e_ms, 95):8.1f}"
        )
    return "\n".join(lines)


def _tuned_for_this_cpu() -> bool:
    from django.conf import settings

    from worker.runtime import cpu
    from worker.runtime.tuned import host_entry

    try:
        return host_entry(json.loads(settings.TUNED_CONFIG.read_text()), cpu.current()) is not None
    except (OSError, ValueError):
        return False


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from worker.runtime import cpu as cpu_signature

    signature = cpu_signature.current()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        # The instruction-set flags that decide the engine's fastest settings, and the signature the
        # tuned file is keyed by (worker/runtime/cpu.py).
        "cpu_flags": list(signature.flags),
        "cpu_signature": signature.key,
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns per configuration (default 3)")
    parser.add_argument("--repeat", type=int, default=8, help="copies of the sample set per turn (default 8)")
    parser.add_argument("--no-cold-start", action="store_true", help="skip the child-process cold starts")
    parser.add_argument("--out", type=Path, help="also write the JSON (and tables) to this file")
    parser.add_argument("--plot", type=Path, help="write a PNG chart of the results here")
    parser.add_argument("--breakdown", action="store_true", help="also time each step per sample and backend")
    args = parser.parse_args(argv)

    _setup_django()
    names, images, skipped = load_samples()
    for note in skipped:
        print(f"note: {note} skipped: decode() does not accept it yet")
    print(f"samples: {len(images)} ({', '.join(names)})")
    print(f"machine: {machine()}")

    from worker.runtime.tuned import engine_config

    # What a worker started with CXRQ_PRECISION=fp32 / fast runs (the tuned file has one
    # configuration per precision; environment variables still win).
    engines = {"default": engine_config(precision="fp32"), "fast": engine_config(precision="fast")}
    default_rt, default_load_ms = _load(engines["default"])
    fast_rt, fast_load_ms = _load(engines["fast"])
    # What fast mode runs after the ladder: the default's configuration when nothing was kept.
    engines["fast"] = fast_rt.engine or engines["fast"]
    fast_is_default = not (fast_rt.fast_guard or {}).get("kept")
    threads = os.cpu_count() or 1
    reference = Reference(_reference_model(), threads)
    tried = tried_runtimes(fast_rt)
    configs: list = [
        reference,
        Pipeline(
            "default",
            default_rt,
            batch_size=engines["default"].batch_max_size,
            workers=engines["default"].preprocess_workers,
        ),
    ]
    if not fast_is_default:
        configs.append(
            Pipeline(
                "fast",
                fast_rt,
                batch_size=engines["fast"].batch_max_size,
                workers=engines["fast"].preprocess_workers,
            )
        )
    tried_names = []
    for entry, rt in tried:
        name = f"fast:{entry['precision']}"
        while name in tried_names:
            name += "'"
        tried_names.append(name)
        configs.append(
            Pipeline(
                name,
                rt,
                batch_size=engines["fast"].batch_max_size,
                workers=engines["fast"].preprocess_workers,
            )
        )
    batch_size = engines["default"].batch_max_size
    stream = list(images) * args.repeat
    # Warm-up turn (operators cached, pools started, first-run allocations), not counted.
    for config in configs:
        config.run(images[: max(2, min(len(images), batch_size))])
    totals = {config.name: StreamStats() for config in configs}
    for _ in range(args.rounds):
        for config in configs:
            totals[config.name].add(config.run(stream))
    if fast_is_default:
        totals["fast"] = totals["default"]  # the same configuration: one measurement, not two
    pre = preprocess_speedup(images, reference, repeats=3)

    n = len(images)

    def per_sample(stats: StreamStats) -> np.ndarray:
        return np.stack(stats.probs[:n])  # the first copy of the sample set, in order

    ref_probs = per_sample(totals["reference"])
    diff_default = float(np.abs(per_sample(totals["default"]) - ref_probs).max())
    diff_fast = float(np.abs(per_sample(totals["fast"]) - ref_probs).max())
    # Every copy must give the same answer (no mix-up inside batches).
    for name in ("default", "fast", *tried_names):
        probs = np.stack(totals[name].probs).reshape(-1, n, ref_probs.shape[1])
        assert np.abs(probs - probs[0]).max() < 1e-5, f"{name}: results depend on batch position"
    control = float(np.abs(ref_probs[0] - ref_probs[1]).max())

    def what(name: str, rt) -> str:
        e = engines[name]
        return f"{rt.backend.name}/{rt.backend.precision} b{e.batch_max_size} t{rt.extra.get('threads')}"

    rows = [
        ("reference", "torch/fp32 b1", totals["reference"]),
        ("default", what("default", default_rt), totals["default"]),
        ("fast", what("fast", fast_rt) + (" (=default)" if fast_is_default else ""), totals["fast"]),
    ]
    rows += [
        (
            name,
            f"{rt.backend.name}/{rt.backend.precision} b{engines['fast'].batch_max_size} (refused)",
            totals[name],
        )
        for name, (_, rt) in zip(tried_names, tried, strict=True)
    ]
    measured = {id(entry): name for name, (entry, _) in zip(tried_names, tried, strict=True)}
    precisions = []
    extras = (fast_rt.extra.get("fast_ladder") or {}).get("tried") or []
    for i, entry in enumerate((fast_rt.fast_guard or {}).get("tried") or []):
        name = "fast" if entry["kept"] else measured.get(id(entry))
        stats = totals.get(name) if name else None
        precisions.append(
            {
                "precision": entry["precision"],
                "backend": entry["backend"],
                "detail": entry["detail"],
                "kept": entry["kept"],
                "reason": entry["reason"],
                # This bench's pipeline: throughput and max |dprob| against the reference.
                "img_s": round(stats.img_s, 2) if stats else None,
                "max_abs_diff": float(f"{np.abs(per_sample(stats) - ref_probs).max():.3g}")
                if stats
                else None,
                # The worker's ladder at start: its guard and its short timed run against fp32.
                "guard_max_abs_diff": entry["max_abs_diff"],
                "ladder_ms_per_image": entry["ms_per_image"],
                "ladder_fp32_ms_per_image": entry["fp32_ms_per_image"],
                "ladder_speedup": entry["speedup"],
                "quantization": extras[i].get("quantization") if i < len(extras) else None,
            }
        )
    print()
    print(
        table(rows)
        + "\n(b: batch size, t: intra-op threads; e2e: its batch's latency from preprocessing start / batch size)"
    )
    print()
    print(
        "fast mode's precision ladder (max|dp|: this bench vs reference; guard, ms/img, fp32: at worker start)"
    )
    print(precision_table(precisions) if precisions else "(nothing tried)")
    ref_img_s = totals["reference"].img_s
    result = {
        "reference_img_s": round(ref_img_s, 2),
        "default_img_s": round(totals["default"].img_s, 2),
        "fast_img_s": round(totals["fast"].img_s, 2),
        "default_speedup": round(totals["default"].img_s / ref_img_s, 2),
        "fast_speedup": round(totals["fast"].img_s / ref_img_s, 2),
        "preprocess_speedup": round(pre["speedup"], 2),
        "max_abs_diff_default": float(f"{diff_default:.3g}"),
        "max_abs_diff_fast": float(f"{diff_fast:.3g}"),
        "control_two_xrays_max_abs_diff": round(control, 4),
        "preprocess_ms_reference": round(pre["reference_ms"], 2),
        "preprocess_ms_default": round(pre["default_ms"], 2),
        "preprocess_max_pixel_diff": float(f"{pre['max_pixel_diff']:.3g}"),
        "default": {
            "backend": default_rt.backend.name,
            "precision": default_rt.backend.precision,
            "preprocessing": default_rt.preprocessing,
            "load_ms": round(default_load_ms),
            "batch_size": engines["default"].batch_max_size,
            "batch_p95_ms": round(_pct(totals["default"].batch_ms, 95), 1),
        },
        "fast_chosen_precision": fast_rt.backend.precision,
        "fast_is_default": fast_is_default,
        "precisions": precisions,
        "fast": {
            "backend": fast_rt.backend.name,
            "precision": fast_rt.backend.precision,
            "preprocessing": fast_rt.preprocessing,
            "guard": fast_rt.fast_guard,
            "load_ms": round(fast_load_ms),
            "batch_size": engines["fast"].batch_max_size,
            "batch_p95_ms": round(_pct(totals["fast"].batch_ms, 95), 1),
        },
        "engine_settings": {name: dataclasses.asdict(e) for name, e in engines.items()},
        # Whether the tuned file had an entry for this CPU (else the built-in defaults ran).
        "tuned_for_this_cpu": _tuned_for_this_cpu(),
        "images": n,
        "images_per_config": totals["default"].images,
        "rounds": args.rounds,
        "skipped": skipped,
        "bench_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": machine(),
    }
    if not args.no_cold_start:
        sample_paths = [SAMPLES / name for name in names]
        result["cold_start_cached"] = cold_start(cache_dir=None, precision="fp32", samples=sample_paths)
        result["cold_start_fast_cached"] = cold_start(cache_dir=None, precision="fast", samples=sample_paths)
        with tempfile.TemporaryDirectory(prefix="cxrq-bench-cache-") as empty:
            # No ONNX export cached; the fallback weights file is copied (official weights live elsewhere).
            from django.conf import settings

            from worker.runtime import fallback

            weights_file = fallback.cached_path(settings.MODEL_CACHE_DIR)
            if weights_file.is_file():
                shutil.copy2(weights_file, Path(empty) / weights_file.name)
            result["cold_start_no_cache"] = cold_start(
                cache_dir=Path(empty), precision="fp32", samples=sample_paths
            )
    if args.breakdown:
        result["breakdown"] = breakdown(names, images)
        print(json.dumps(result["breakdown"], indent=1))
    if args.plot:
        from tools.bench_plot import plot

        plot(result, rows, args.plot)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, separators=(",", ":")))
    return result


if __name__ == "__main__":
    main()
