"""A PNG preview of a job's image as stored: what the model was given, after de-identification.

The stored file is intake's output (backend/jobs/images.py accept_image): a PNG or JPEG with its
metadata stripped, or a DICOM rebuilt by backend/jobs/dicom.py from an allowlist, uncompressed,
single-frame, MONOCHROME1/2, with its window (Window Center / Width) or VOI LUT Sequence kept when
the upload had one. So decoding it here is a plain pydicom read of a file this project wrote.

Grey levels for a person, not for the model:
- DICOM: the file's own VOI (its VOI LUT Sequence, else its first window), as a viewer would
  open it; with none, the 0.5th to 99.5th percentile of its pixels. MONOCHROME1 is inverted so
  bone is white, as in every other format.
- 16-bit PNG: the same percentile window (their values rarely span the whole 0..65535).
- 8-bit PNG and JPEG: as they are (JPEG decoded at a reduced scale when that is enough).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from backend.jobs import dicom

MAX_SIDE = 512
PERCENTILES = (0.5, 99.5)
# Pixels looked at to choose a window: every k-th row and column of a large image is plenty.
_WINDOW_SAMPLE_SIDE = 1024


class ThumbnailError(Exception):
    """The stored bytes could not be decoded (should not happen: intake decoded them once)."""


def preview_of(job) -> bytes:
    """The PNG preview of a job's stored image (the web client's and the admin's); ThumbnailError
    when the job has none any more (deleted, purged) or the file cannot be read."""
    if not job.upload or job.image_deleted_at is not None:
        raise ThumbnailError("no stored image")
    try:
        with job.upload.open("rb") as stored:
            data = stored.read()
    except OSError as exc:
        raise ThumbnailError("the stored image could not be read") from exc
    return render(data)


def render(data: bytes, *, max_side: int = MAX_SIDE) -> bytes:
    """PNG bytes of an 8-bit greyscale preview, at most max_side pixels on its longer side."""
    try:
        image = _dicom_image(data) if dicom.is_part10(data) else _raster_image(data, max_side)
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG")
    except ThumbnailError:
        raise
    except Exception as exc:
        raise ThumbnailError(type(exc).__name__) from exc
    return out.getvalue()


def _raster_image(data: bytes, max_side: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG":
            img.draft("L", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale when that is enough
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return Image.fromarray(to_8bit(np.asarray(img), window=None))
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        return img.convert("L")


def _dicom_image(data: bytes) -> Image.Image:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        if arr.ndim != 2 or photometric not in dicom.MONOCHROME:
            raise ThumbnailError("not a single-frame monochrome image")
        bits = int(ds.get("BitsStored", 8) or 8)
        has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
        if has_voi:
            arr = apply_voi_lut(arr, ds, index=0)
    # After a VOI LUT or window the values span the output range pydicom gives them
    # (0 .. 2**BitsStored - 1 for a window; the LUT's own range for a sequence).
    window = _voi_range(ds, bits) if has_voi else None
    gray = to_8bit(arr, window=window)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray)


def _voi_range(ds, bits: int) -> tuple[float, float]:
    if "VOILUTSequence" in ds:
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        return 0.0, float(2 ** int(descriptor[2]) - 1)
    return 0.0, float(2**bits - 1)


def percentile_window(arr: np.ndarray) -> tuple[float, float]:
    step = max(1, max(arr.shape[:2]) // _WINDOW_SAMPLE_SIDE)
    sample = arr[::step, ::step]
    low, high = np.percentile(sample, PERCENTILES)
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    return float(low), float(high)


def to_8bit(arr: np.ndarray, *, window: tuple[float, float] | None) -> np.ndarray:
    """Map [low, high] (a percentile window when None) to 0..255, clipping outside."""
    low, high = window if window is not None else percentile_window(arr)
    if high <= low:
        return np.zeros(arr.shape[:2], dtype=np.uint8)
    scaled = (arr.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).round().astype(np.uint8)
