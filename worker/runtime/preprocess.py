"""One preprocessing path for every format: decode -> normalise -> crop -> resize.

What the model sees follows torchxrayvision's own pipeline:
  xrv.datasets.normalize(img, maxval) to [-1024, 1024], mean over colour
  channels, XRayCenterCrop, XRayResizer(224).
The version of this module is worker.model_identity.PREPROCESS_VERSION; it is
part of every result's provenance and of the dedup key.
"""

from __future__ import annotations

import numpy as np

from worker.model_identity import PREPROCESS_VERSION
from worker.runtime.decode import DecodeError, decode

INPUT_SIZE = 224

__all__ = ["INPUT_SIZE", "PREPROCESS_VERSION", "PreprocessError", "normalize", "preprocess", "to_model_input"]

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


def to_model_input(img: np.ndarray) -> np.ndarray:
    """Reference crop + resize: XRayCenterCrop, then XRayResizer(224) (scikit-image)."""
    import torchxrayvision as xrv

    chw = img[None, ...]
    chw = xrv.datasets.XRayCenterCrop()(chw)
    return xrv.datasets.XRayResizer(INPUT_SIZE)(chw)


def preprocess(data: bytes) -> np.ndarray:
    """Bytes -> float32 array of shape (1, 224, 224), ready for the model."""
    arr, maxval = decode(data)
    return to_model_input(normalize(arr, maxval))
