"""JPEG-LS decoders, measured: CharLS (pyjpegls), which intake uses because it refuses a cut scan,
against libjpeg (pylibjpeg-libjpeg), which pydicom would otherwise pick first.

    python -m tools.jpegls_decode_bench [--repeat 21]

The SIIM sample in tests/data/cxr (1024 x 1024, 8-bit) encoded by CharLS, lossless and
near-lossless (NEAR=2); one thread, decoders interleaved so that a noisy neighbour slows them
alike, median of --repeat runs. Says whether their pixels are identical (they must be: intake
switched decoders on that condition) and what each does with the frame cut in half, with and
without an end marker put back. Prints the CPU, core count and load average beside the figures:
on a shared machine, read the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests/data/cxr/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _cpu() -> str:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _outcome(decode, frame: bytes) -> str:
    try:
        decode(frame)
    except Exception as exc:  # noqa: BLE001 - what each decoder does is the point
        return f"refused ({type(exc).__name__})"
    return "decoded, nothing reported"


def main() -> None:
    import jpeg_ls
    from libjpeg import decode as libjpeg_decode

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()

    def charls(frame: bytes) -> np.ndarray:
        return jpeg_ls.decode(np.frombuffer(frame, np.uint8))

    pixels = pydicom.dcmread(SAMPLE).pixel_array
    print(f"cpu: {_cpu()}, {os.cpu_count()} cores, load average before: {os.getloadavg()}")
    for name, near in (("lossless", 0), ("near-lossless NEAR=2", 2)):
        frame = bytes(jpeg_ls.encode(pixels, lossy_error=near))
        same = bool((charls(frame) == libjpeg_decode(frame)).all())
        times: dict[str, list[float]] = {"CharLS": [], "libjpeg": []}
        for _ in range(args.repeat):
            for label, decode in (("CharLS", charls), ("libjpeg", libjpeg_decode)):
                began = time.perf_counter()
                decode(frame)
                times[label].append((time.perf_counter() - began) * 1000)
        c, lj = (statistics.median(times[k]) for k in ("CharLS", "libjpeg"))
        half = frame[: len(frame) // 2]
        print(
            f"JPEG-LS {name}, {len(frame)} bytes: CharLS {c:.1f} ms, libjpeg {lj:.1f} ms "
            f"(CharLS/libjpeg {c / lj:.2f}); identical pixels: {same}"
        )
        for cut, data in (("cut in half", half), ("cut in half + EOI", half + b"\xff\xd9")):
            print(f"  {cut}: CharLS {_outcome(charls, data)}; libjpeg {_outcome(libjpeg_decode, data)}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
