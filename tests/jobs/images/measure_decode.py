"""Per-sample intake and preprocessing time (median of a few runs), for docs/intake.md.

    DJANGO_SETTINGS_MODULE=backend.settings.test python -m tests.jobs.images.measure_decode

Not a benchmark harness: one process, one thread, small repeat count, so it can
run on a shared machine. Columns: web-side intake (validate, decode once,
de-identify), worker decode of the stored bytes, worker preprocess (decode +
normalise + crop + resize to 224).
"""

from __future__ import annotations

import statistics
import time

import django


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(repeat: int = 5) -> None:
    django.setup()
    from backend.jobs import images
    from tests.factories import DATA, sample_bytes
    from tests.jobs.images import factories as f
    from worker.runtime.decode import decode
    from worker.runtime.preprocess import preprocess

    uploads = {
        p.name: sample_bytes(p.name) for p in sorted(DATA.iterdir()) if p.suffix in (".png", ".jpg", ".dcm")
    }
    uploads.update({name: make() for name, make in f.ACCEPTED_GENERATED.items()})
    print(
        f"{'file':<64} {'size KiB':>9} {'pixels':>11} {'intake ms':>10} {'decode ms':>10} {'preprocess ms':>14}"
    )
    for name, data in uploads.items():
        accepted = images.accept_image(
            data, max_pixels=50_000_000, min_side=64, dicom_max_header_bytes=4 << 20
        )
        stored = accepted.stored_bytes
        web = _median_ms(
            lambda data=data: images.accept_image(
                data, max_pixels=50_000_000, min_side=64, dicom_max_header_bytes=4 << 20
            ),
            repeat,
        )
        dec = _median_ms(lambda stored=stored: decode(stored), repeat)
        pre = _median_ms(lambda stored=stored: preprocess(stored), repeat)
        pixels = f"{accepted.width}x{accepted.height}"
        print(f"{name:<64} {len(data) / 1024:>9.0f} {pixels:>11} {web:>10.1f} {dec:>10.1f} {pre:>14.1f}")


if __name__ == "__main__":
    main()
