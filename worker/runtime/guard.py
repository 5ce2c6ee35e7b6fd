"""The fast-mode guard: reduced precision is kept only where it is measured to be close enough.

The accuracy of bf16/fp16 (and of reduced-scale JPEG decoding) cannot be
proven once for all weights, so every worker that starts in fast mode runs
its calibration images through the exact pipeline (exact preprocessing, fp32)
and the fast one, and keeps a fast precision only if no probability moves by
more than FAST_MAX_ABS_DIFF (worker/runtime/ladder.py also requires it to be
faster). Otherwise it runs the default and says so: in its log
(event=fast_refused), in its heartbeat info and in every result's provenance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from worker.runtime.preprocess import PreprocessError

logger = logging.getLogger(__name__)

MAX_CALIBRATION_IMAGES = 64
MIN_CALIBRATION_IMAGES = 2

Predict = Callable[[np.ndarray], np.ndarray]
Preprocess = Callable[[bytes], np.ndarray]


@dataclass(frozen=True)
class GuardVerdict:
    kept: bool
    max_abs_diff: float | None
    mean_abs_diff: float | None
    limit: float
    images: int
    ms: float
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def calibration_images(directory: Path, *, limit: int = MAX_CALIBRATION_IMAGES) -> list[bytes]:
    """Every file in the directory that the exact pipeline accepts (sorted by name)."""
    from worker.runtime.preprocess import preprocess

    images: list[bytes] = []
    for path in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
        if len(images) >= limit:
            break
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            preprocess(data)
        except PreprocessError:
            continue
        images.append(data)
    return images


def _run(images: list[bytes], preprocess: Preprocess, predict: Predict, batch_size: int) -> np.ndarray:
    inputs = np.stack([preprocess(data) for data in images])
    return np.concatenate([predict(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def reference_probabilities(
    images: list[bytes], preprocess: Preprocess, predict: Predict, batch_size: int
) -> np.ndarray | None:
    """The exact pipeline's answers on the calibration images, computed once for several checks."""
    if len(images) < MIN_CALIBRATION_IMAGES:
        return None
    return _run(images, preprocess, predict, batch_size)


def check_fast(
    *,
    images: list[bytes],
    exact: tuple[Preprocess, Predict],
    fast: tuple[Preprocess, Predict],
    limit: float,
    batch_size: int,
    reference: np.ndarray | None = None,
) -> GuardVerdict:
    """Compare the fast pipeline with the exact one on the calibration images (`reference`: the
    exact pipeline's answers when already computed)."""
    started = time.perf_counter()
    if len(images) < MIN_CALIBRATION_IMAGES:
        return GuardVerdict(
            kept=False,
            max_abs_diff=None,
            mean_abs_diff=None,
            limit=limit,
            images=len(images),
            ms=0.0,
            reason=f"fewer than {MIN_CALIBRATION_IMAGES} calibration images",
        )
    want = reference if reference is not None else _run(images, *exact, batch_size)
    got = _run(images, *fast, batch_size)
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    max_diff = float(np.nanmax(diff)) if np.isfinite(diff).all() else float("inf")
    kept = max_diff <= limit
    return GuardVerdict(
        kept=kept,
        max_abs_diff=round(max_diff, 6),
        mean_abs_diff=round(float(diff.mean()), 6),
        limit=limit,
        images=len(images),
        ms=round((time.perf_counter() - started) * 1000, 1),
        reason="within limit" if kept else f"max |dprob| {max_diff:.4f} > FAST_MAX_ABS_DIFF {limit}",
    )
