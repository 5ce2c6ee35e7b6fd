"""Fast-mode preprocessing: large JPEGs decoded at reduced scale.

Only in fast mode, and only while the fast-mode guard keeps it
(worker/runtime/guard.py measures it with the fast precision on the
calibration images). Everything else goes through the exact path.

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 scale by dropping DCT
coefficients (Pillow's `draft`), which skips most of the decoding work on the
largest uploads. A reduced pixel is roughly the mean of an s x s block, a blur
of the image, so each reduced pixel takes the summed weights that the exact
operator (worker/runtime/preprocess.py) gives to its block: the result is
exact where the image is constant over each block and differs only by the
detail inside blocks that the reduced decoding averaged away. The scale is chosen so that the reduced
crop keeps at least DRAFT_MIN_FACTOR x 224 pixels per side. It is an
approximation: the guard and the benchmark report how far it moves the
probabilities.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import scipy.sparse
from PIL import Image

from worker.metrics import timed_decode
from worker.runtime.preprocess import (
    INPUT_SIZE,
    center_crop_box,
    channel_sum,
    clip_like_skimage,
    preprocess,
    resize_operator,
)

# At 1/2 scale the fallback model's probabilities move by ~0.003 on the 2373^2 sample, at 1/4 by ~0.011.
DRAFT_MIN_FACTOR = 4.0
DRAFT_SCALES = (8, 4, 2)
FAST_PREPROCESS_NAME = "jpeg-draft"


def draft_scale(side: int) -> int:
    """The largest libjpeg scale that keeps side/scale >= DRAFT_MIN_FACTOR * 224 (1: none)."""
    for scale in DRAFT_SCALES:
        if side / scale >= DRAFT_MIN_FACTOR * INPUT_SIZE:
            return scale
    return 1


@lru_cache(maxsize=64)
def draft_operator(
    reduced: int, start: int, side: int, scale: int, size: int = INPUT_SIZE
) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """(size x reduced) matrix: the reference's blur + resample of the full-resolution crop
    [start, start + side), applied to pixels decoded at 1/scale.

    A reduced pixel j stands for the full-resolution pixels [j*scale, (j+1)*scale): it
    gets the sum of the exact operator's weights over those of them inside the crop.
    Exact where the image is constant over each block, and at the crop's edges.
    """
    exact, _ = resize_operator(side, size)
    full_index = start + np.arange(side)
    to_block = scipy.sparse.csr_matrix(
        (np.ones(side, dtype=np.float32), (np.arange(side), full_index // scale)),
        shape=(side, reduced),
        dtype=np.float32,
    )
    matrix = (exact @ to_block).tocsr()
    matrix.sum_duplicates()
    return matrix, np.asarray(matrix.astype(np.float64).sum(axis=1)).ravel()


@timed_decode
def _reduced_jpeg(data: bytes) -> tuple[np.ndarray, int, int, int] | None:
    """(pixels decoded at 1/scale, full height, full width, scale), or None when not worth it."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:
            if img.mode not in ("L", "RGB"):
                return None
            width, height = img.size
            scale = draft_scale(min(width, height))
            if scale == 1:
                return None
            img.draft(img.mode, (width // scale, height // scale))
            img.load()
            actual = round(width / img.size[0])
            if actual != scale or img.size != (math.ceil(width / scale), math.ceil(height / scale)):
                return None
            return np.asarray(img), height, width, scale
    except Exception:  # noqa: BLE001 - the exact path decodes it again and reports the error
        return None


def preprocess_fast(data: bytes) -> np.ndarray:
    """Bytes -> float32 (1, 224, 224): reduced-scale JPEG decoding where it pays, else exact."""
    reduced = _reduced_jpeg(data)
    if reduced is None:
        return preprocess(data)
    arr, height, width, scale = reduced
    top, left, side = center_crop_box(height, width)
    rows_op, row_sums = draft_operator(arr.shape[0], top, side, scale)
    cols_op, col_sums = draft_operator(arr.shape[1], left, side, scale)
    channels = arr.shape[2] if arr.ndim == 3 else 1
    pixels = channel_sum(arr) if arr.ndim == 3 else arr.astype(np.float32)
    resized = (cols_op @ (rows_op @ pixels).T).T
    scale = np.float32(2048.0 / (255 * channels))
    out = (resized * scale - (1024.0 * np.outer(row_sums, col_sums)).astype(np.float32)).astype(np.float32)
    lo, hi = float(pixels.min()), float(pixels.max())
    return clip_like_skimage(out, lo * float(scale) - 1024.0, hi * float(scale) - 1024.0)[None]


__all__ = ["FAST_PREPROCESS_NAME", "draft_operator", "draft_scale", "preprocess_fast"]
