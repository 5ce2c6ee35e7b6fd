"""DICOM decoding, measured: the decoder in use against libjpeg-turbo, and what the worker really pays.

    python -m tools.dicom_decode_bench [--repeat 15] [--json-only]

For each 1024 x 1024, 8-bit, single-frame JPEG Baseline DICOM (the SIIM sample in
tests/data/cxr, written by its own encoder, and the same pixels re-encoded by
Pillow), one thread, median of --repeat runs, decoders interleaved so that a
noisy neighbour slows them alike:

  pylibjpeg      what intake and torchxrayvision's reader use: pydicom's
                 pixel_array (dcmread included), served by pylibjpeg-libjpeg
  libjpeg-turbo  the candidate: the encapsulated frame decoded by Pillow

and how far apart their pixels are (count, max |difference|, and the largest
difference it makes to the 224 x 224 model input on its +-1024 scale). A
libjpeg-turbo decode may replace pylibjpeg only where the arrays are identical.

Then the path a DICOM takes on the platform: intake (web process, once per
upload) validates, decodes and stores a de-identified, uncompressed copy; the
worker decodes that copy, never the JPEG. Timed: intake per upload, and the
worker's decode and exact preprocessing (decode + normalise + crop + resize to
224) of the stored copy, beside the same on the original upload (what
`tools.bench --breakdown` times, since it feeds the raw sample files).

The table goes to stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "cxr"
JPEG_SAMPLE = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
SIDE = 1024


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings.dev")
    import django

    django.setup()


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms of each, the functions taking turns run by run."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # one untimed call each: imports, caches
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def pillow_encoded_sample() -> bytes:
    """The SIIM sample's pixels, re-encoded as JPEG Baseline by Pillow (libjpeg-turbo's encoder)."""
    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(SAMPLES / JPEG_SAMPLE)
    buf = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buf, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].is_undefined_length = True
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def decoders(data: bytes) -> dict[str, Callable[[], np.ndarray]]:
    import pydicom
    from PIL import Image
    from pydicom.encaps import generate_frames

    def pylibjpeg() -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data)).pixel_array

    def turbo() -> np.ndarray:
        ds = pydicom.dcmread(io.BytesIO(data))
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        with Image.open(io.BytesIO(frame), formats=["JPEG"]) as img:
            return np.asarray(img)

    return {"pylibjpeg": pylibjpeg, "libjpeg-turbo": turbo}


def compare(data: bytes, repeat: int) -> dict:
    from worker.runtime.preprocess import model_input

    fns = decoders(data)
    ms = _medians(fns, repeat)
    reference, candidate = fns["pylibjpeg"](), fns["libjpeg-turbo"]()
    if reference.shape != candidate.shape:
        raise SystemExit(f"decoders disagree on the shape: {reference.shape} vs {candidate.shape}")
    diff = candidate.astype(np.int32) - reference.astype(np.int32)
    maxval = 2**8 - 1
    input_diff = np.abs(model_input(candidate, maxval) - model_input(reference, maxval))
    return {
        "shape": list(reference.shape),
        "pylibjpeg_ms": ms["pylibjpeg"],
        "turbo_ms": ms["libjpeg-turbo"],
        "turbo_speedup": round(ms["pylibjpeg"] / ms["libjpeg-turbo"], 2),
        "bit_identical": bool(reference.dtype == candidate.dtype and not diff.any()),
        "pixels_differ": int(np.count_nonzero(diff)),
        "pixels_differ_fraction": round(float(np.count_nonzero(diff)) / diff.size, 4),
        "max_abs_diff": int(np.abs(diff).max()),
        "mean_diff": round(float(diff.mean()), 4),
        "model_input_max_abs_diff": round(float(input_diff.max()), 3),
    }


def probability_shift(inputs: dict[str, bytes]) -> tuple[str, dict[str, float]]:
    """max |Δprob| between the two decoders' pixels, through the exact preprocessing and the
    configured weights on torch fp32 (what a default worker computes)."""
    from django.conf import settings

    from backend.jobs.model_identity import current_identity
    from worker.runtime.model import BackendFactory, _load_weights
    from worker.runtime.preprocess import model_input

    factory = BackendFactory(
        _load_weights(current_identity()),
        threads=os.cpu_count() or 1,
        device="cpu",
        cache_dir=settings.MODEL_CACHE_DIR,
    )
    backend = factory.exact("torch")
    weights = current_identity().version
    shifts = {}
    for name, data in inputs.items():
        fns = decoders(data)
        x = np.stack([model_input(fns[key](), 255) for key in ("pylibjpeg", "libjpeg-turbo")])
        probs = backend.predict(x)
        shifts[name] = float(np.abs(probs[0] - probs[1]).max())
    return weights, shifts


def platform_path(data: bytes, repeat: int) -> dict:
    from backend.jobs import images
    from worker.runtime.decode import decode
    from worker.runtime.preprocess import preprocess

    def accept() -> bytes:
        return images.accept_image(
            data, max_pixels=50_000_000, min_side=64, dicom_max_header_bytes=4 << 20
        ).stored_bytes

    stored = accept()
    np.testing.assert_array_equal(decode(stored)[0], decode(data)[0])  # the worker sees the same pixels
    ms = _medians(
        {
            "intake_per_upload_ms": accept,
            "worker_decode_stored_ms": lambda: decode(stored),
            "worker_preprocess_stored_ms": lambda: preprocess(stored),
            "decode_upload_ms": lambda: decode(data),
            "preprocess_upload_ms": lambda: preprocess(data),
        },
        repeat,
    )
    return ms


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per function (median)")
    parser.add_argument("--json-only", action="store_true", help="print the JSON line alone")
    parser.add_argument(
        "--probs", action="store_true", help="also load the model: max |Δprob| between the decoders' pixels"
    )
    args = parser.parse_args(argv)
    _setup_django()
    from PIL import features

    sample = (SAMPLES / JPEG_SAMPLE).read_bytes()
    inputs = {"siim_sample": sample, "pillow_reencoded": pillow_encoded_sample()}
    result = {
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "repeat": args.repeat,
        "frames": {name: compare(data, args.repeat) for name, data in inputs.items()},
        "platform": platform_path(sample, args.repeat),
    }
    if args.probs:
        result["weights"], shifts = probability_shift(inputs)
        for name, shift in shifts.items():
            result["frames"][name]["max_abs_dprob"] = shift
    if not args.json_only:
        print(f"CPU: {result['cpu']} ({result['cpu_count']} cores); median of {args.repeat}, one thread")
        print(
            f"{'1024² 8-bit JPEG Baseline frame':<34} {'pylibjpeg':>10} {'turbo':>8} {'ratio':>6} "
            f"{'identical':>9} {'px differ':>10} {'max|Δ|':>7} {'input Δ':>8}"
        )
        for name, row in result["frames"].items():
            print(
                f"{name:<34} {row['pylibjpeg_ms']:>8.2f}ms {row['turbo_ms']:>6.2f}ms {row['turbo_speedup']:>6.2f} "
                f"{row['bit_identical']!s:>9} {row['pixels_differ_fraction']:>10.2%} {row['max_abs_diff']:>7} "
                f"{row['model_input_max_abs_diff']:>8.3f}"
                + (f"  Δprob {row['max_abs_dprob']:.2e}" if "max_abs_dprob" in row else "")
            )
        print("platform path of the SIIM sample, ms per image:")
        for key, value in result["platform"].items():
            print(f"  {key:<32} {value:>8.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
