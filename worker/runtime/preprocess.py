"""One preprocessing path for every format: decode -> normalise -> crop -> resize.

What the model sees is torchxrayvision's own pipeline:
  xrv.datasets.normalize(img, maxval) to [-1024, 1024], mean over colour
  channels, XRayCenterCrop, XRayResizer(224)
(`reference_model_input` runs exactly that, for tests and the benchmark).

`model_input` computes the same numbers much faster. XRayResizer is
skimage.transform.resize(mode="constant", anti_aliasing=True): a Gaussian blur
(sigma = (n/224 - 1)/2, truncated at 4 sigma, zeros outside the image) over
the whole image, then linear interpolation at the 224 half-pixel-centred
positions that ndi.zoom(grid_mode=True) reads. Both steps are linear and
separable, so along each axis they are one (224 x n) matrix with about
8 sigma + 2 non-zeros per row: the blur is computed only where the resampler
reads. Normalisation and the channel mean are affine, so they move after the
resize, onto 224 x 224 pixels instead of millions. Everything stays float32.
The result equals the reference to float32 rounding (~1e-4 on the
[-1024, 1024] scale; tests/runtime/test_preprocess.py).

The version of this module is backend.jobs.model_identity.PREPROCESS_VERSION; it is
part of every result's provenance and of the dedup key.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse

from backend.jobs.model_identity import PREPROCESS_VERSION
from worker.runtime.decode import DecodeError, decode

INPUT_SIZE = 224
# scipy.ndimage.gaussian_filter's default, which skimage.transform.resize uses.
GAUSSIAN_TRUNCATE = 4.0

__all__ = [
    "INPUT_SIZE",
    "PREPROCESS_VERSION",
    "PreprocessError",
    "center_crop_box",
    "model_input",
    "normalize",
    "preprocess",
    "reference_model_input",
    "to_model_input",
]

# Decode and preprocess errors fail one job with their code; callers catch one type.
PreprocessError = DecodeError


def normalize(arr: np.ndarray, maxval: int) -> np.ndarray:
    """xrv.datasets.normalize followed by the mean over colour channels."""
    if arr.max() > maxval:
        raise PreprocessError("bad_pixel_range", f"max pixel {arr.max()} above {maxval}")
    img = (2 * (arr.astype(np.float32) / maxval) - 1.0) * 1024
    if img.ndim == 3:
        img = img.mean(2)
    if img.ndim != 2:
        raise PreprocessError("bad_shape", f"unexpected image shape {arr.shape}")
    return img


def reference_model_input(img: np.ndarray) -> np.ndarray:
    """torchxrayvision's crop + resize, verbatim: XRayCenterCrop, then XRayResizer(224)."""
    import torchxrayvision as xrv

    chw = img[None, ...]
    chw = xrv.datasets.XRayCenterCrop()(chw)
    return xrv.datasets.XRayResizer(INPUT_SIZE)(chw)


def center_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of XRayCenterCrop's square."""
    side = min(height, width)
    return height // 2 - side // 2, width // 2 - side // 2, side


def gaussian_kernel(sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d's kernel (float64, sums to 1)."""
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x * x)
    return phi / phi.sum()


@lru_cache(maxsize=64)
def resize_operator(n: int, size: int = INPUT_SIZE) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """skimage.transform.resize(mode="constant", anti_aliasing=True) along one axis of length n.

    Returns the (size x n) float32 matrix and its row sums (float64). Row i
    holds the Gaussian weights around input position c_i = (i + 0.5) * n/size - 0.5,
    linearly interpolated between floor(c_i) and floor(c_i) + 1; positions
    outside [0, n) read zeros, like mode="constant" (scipy's grid-constant).
    """
    factor = n / size
    sigma = max(0.0, (factor - 1) / 2)
    # skimage blurs only when downsampling, and scipy skips sigma <= 1e-15.
    kernel = gaussian_kernel(sigma) if n > size and sigma > 1e-15 else np.ones(1)
    radius = len(kernel) // 2
    c = (np.arange(size) + 0.5) * factor - 0.5
    k = np.floor(c).astype(np.int64)
    t = c - k
    # Zero padding: a blurred sample outside the image reads 0 (grid-constant), and so
    # does every kernel tap outside it (the columns dropped below).
    low_in = ((k >= 0) & (k < n)).astype(np.float64)
    high_in = ((k + 1 >= 0) & (k + 1 < n)).astype(np.float64)
    weights = np.zeros((size, len(kernel) + 1))
    weights[:, :-1] += ((1 - t) * low_in)[:, None] * kernel  # blurred sample k
    weights[:, 1:] += (t * high_in)[:, None] * kernel  # blurred sample k + 1
    cols = (k - radius)[:, None] + np.arange(len(kernel) + 1)
    rows = np.broadcast_to(np.arange(size)[:, None], cols.shape)
    keep = (cols >= 0) & (cols < n) & (weights != 0)
    matrix = scipy.sparse.csr_matrix(
        (weights[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(size, n), dtype=np.float32
    )
    matrix.sum_duplicates()
    return matrix, np.asarray(matrix.astype(np.float64).sum(axis=1)).ravel()


def channel_sum(img: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W) float32 sum over the colour axis.

    numpy reduces a length-3 last axis slowly (~70 ms for 2373^2 x 3); OpenCV splits
    the channels and adds them in float32 in ~4 ms. Sums of at most four 16-bit
    integers are exact in float32.
    """
    if img.dtype in (np.uint8, np.uint16) and 2 <= img.shape[2] <= 4:
        import cv2

        planes = cv2.split(np.ascontiguousarray(img))
        out = planes[0].astype(np.float32)
        for plane in planes[1:]:
            out = cv2.add(out, plane, dtype=cv2.CV_32F)
        return out
    out = img[..., 0].astype(np.float32)
    for ch in range(1, img.shape[2]):
        out += img[..., ch]
    return out


def _check_range(arr: np.ndarray, maxval: int) -> None:
    if np.issubdtype(arr.dtype, np.integer) and np.iinfo(arr.dtype).max <= maxval:
        return  # cannot exceed maxval: skip a pass over the pixels
    if arr.max() > maxval:
        raise PreprocessError("bad_pixel_range", f"max pixel {arr.max()} above {maxval}")


def _min_max(pixels: np.ndarray) -> tuple[float, float]:
    import cv2

    lo, hi, _, _ = cv2.minMaxLoc(np.ascontiguousarray(pixels, dtype=np.float32))
    return lo, hi


def clip_like_skimage(out: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """skimage's resize clips its output to the input's value range, widened to take in
    cval (0) when the output reaches it (`_clip_warp_output`). Ordinary X-rays span
    negative and positive values and nothing changes; an all-dark or all-bright image
    would otherwise keep the zero padding's dim border."""
    if not lo <= 0.0 <= hi and out.min() <= 0.0 <= out.max():
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return np.clip(out, np.float32(lo), np.float32(hi), out=out)


def model_input(arr: np.ndarray, maxval: int) -> np.ndarray:
    """(H, W) or (H, W, C) pixels and their maximum value -> float32 (1, 224, 224).

    Equal to reference_model_input(normalize(arr, maxval)) up to float32 rounding.
    """
    if arr.ndim not in (2, 3):
        raise PreprocessError("bad_shape", f"unexpected image shape {arr.shape}")
    _check_range(arr, maxval)
    top, left, side = center_crop_box(arr.shape[0], arr.shape[1])
    crop = arr[top : top + side, left : left + side]
    channels = crop.shape[2] if crop.ndim == 3 else 1
    pixels = channel_sum(crop) if crop.ndim == 3 else crop.astype(np.float32, copy=False)
    op, row_sums = resize_operator(side)
    resized = (op @ (op @ pixels).T).T  # rows, then columns
    # normalize() is x * 2048/maxval - 1024 per pixel; the mean over channels divides by C.
    # Through the linear resize: a * R(x) + b * R(1), with R(1) = outer(row_sums, row_sums).
    scale = np.float32(2048.0 / (maxval * channels))
    offset = (1024.0 * np.outer(row_sums, row_sums)).astype(np.float32)
    out = (resized * scale - offset).astype(np.float32, copy=False)
    lo, hi = _min_max(pixels)
    out = clip_like_skimage(out, lo * float(scale) - 1024.0, hi * float(scale) - 1024.0)
    return out[None]


def to_model_input(img: np.ndarray) -> np.ndarray:
    """Crop + resize of an already normalised (H, W) image: same numbers as the reference."""
    top, left, side = center_crop_box(*img.shape)
    op, _ = resize_operator(side)
    crop = img[top : top + side, left : left + side].astype(np.float32, copy=False)
    out = (op @ (op @ crop).T).T.astype(np.float32, copy=False)
    return clip_like_skimage(out, *_min_max(crop))[None]


def preprocess(data: bytes) -> np.ndarray:
    """Bytes -> float32 array of shape (1, 224, 224), ready for the model (exact path)."""
    arr, maxval = decode(data)
    return model_input(arr, maxval)
