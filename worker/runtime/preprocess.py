"""One preprocessing path for every format: decode -> normalise -> crop -> resize.

What the model sees follows torchxrayvision's own pipeline:
  xrv.datasets.normalize(img, maxval) to [-1024, 1024], mean over colour
  channels, XRayCenterCrop, XRayResizer(224).
The version of this module is worker.model_identity.PREPROCESS_VERSION; it is
part of every result's provenance and of the dedup key.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from worker.model_identity import PREPROCESS_VERSION

INPUT_SIZE = 224

__all__ = ["INPUT_SIZE", "PREPROCESS_VERSION", "PreprocessError", "decode", "preprocess", "to_model_input"]


class PreprocessError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _to_array(img: Image.Image) -> tuple[np.ndarray, int]:
    """Pixel array and its maximum possible value, keeping 16-bit depth."""
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img, dtype=np.uint16), 65535
    if img.mode == "I":
        arr = np.asarray(img)
        return arr, 65535 if arr.max() > 255 else 255
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "RGBA"):
        img = img.convert("L" if img.mode == "LA" else "RGB")
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img), 255


def decode(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to a float32 HxW array in [-1024, 1024]."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as img:
            img.load()
            arr, maxval = _to_array(img)
    except Exception as exc:  # noqa: BLE001 - any decoder error is this job's failure alone
        raise PreprocessError("decode_failed", f"{type(exc).__name__}: {exc}") from exc
    return normalize(arr, maxval)


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
    return to_model_input(decode(data))
