"""Decode uploaded bytes to a pixel array and its maximum possible value.

Format is recognised from content (the web process already validated it);
every format ends in the same place: (HxW or HxWxC array, maxval), handed to
worker.runtime.preprocess.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


class DecodeError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _pil_to_array(img: Image.Image) -> tuple[np.ndarray, int]:
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


def decode(data: bytes) -> tuple[np.ndarray, int]:
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as img:
            img.load()
            return _pil_to_array(img)
    except Exception as exc:
        raise DecodeError("decode_failed", f"{type(exc).__name__}: {exc}") from exc
