"""Decode stored bytes to a pixel array and its maximum possible value.

Format is recognised from content (the web process already validated it and
stored a de-identified copy); every format ends in the same place:
(HxW or HxWxC array, maxval), handed to worker.runtime.preprocess.

DICOM follows torchxrayvision's reader, xrv.utils.read_xray_dcm, with its
defaults: maxval = 2**BitsStored - 1, MONOCHROME1 inverted as maxval - data,
VOI LUT off. CXRQ_DICOM_APPLY_VOI_LUT turns the VOI LUT on, exactly like
read_xray_dcm(voi_lut=True); it is part of the model version
(backend.jobs.model_identity) because it changes what the model sees.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile

from worker.metrics import timed_decode


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


def _is_dicom(data: bytes) -> bool:
    return data[128:132] == b"DICM"


def _check_frames(ds) -> None:
    """The stored copy is native pixel data (intake writes it so), where pydicom refuses a short
    Pixel Data itself. A compressed copy is read only as intake reads an upload: whole frames, the
    strict decoder (libjpeg would fill a cut scan in and report nothing)."""
    from pydicom.encaps import generate_frames

    from backend.jobs.dicom import DECODING_PLUGINS, RLE_LOSSLESS, frame_is_complete

    ts = ds.file_meta.TransferSyntaxUID
    if not ts.is_encapsulated:
        return
    if str(ts) not in DECODING_PLUGINS:
        raise DecodeError("decode_failed", "DICOM transfer syntax not supported")
    if str(ts) != RLE_LOSSLESS:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        if not frame_is_complete(frame):
            raise DecodeError("decode_failed", "DICOM frame is truncated (no end-of-image marker)")
    ds.pixel_array_options(decoding_plugin=DECODING_PLUGINS[str(ts)])


def apply_voi_lut_setting() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "DICOM_APPLY_VOI_LUT", False))


def decode_dicom(data: bytes, *, apply_voi_lut: bool | None = None) -> tuple[np.ndarray, int]:
    """xrv.utils.read_xray_dcm up to (not including) normalize: (array, 2**BitsStored - 1)."""
    import pydicom
    from pydicom.pixels import apply_voi_lut as _apply_voi_lut

    if apply_voi_lut is None:
        apply_voi_lut = apply_voi_lut_setting()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))  # Part 10 only: no force=True
            photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
            if photometric not in ("MONOCHROME1", "MONOCHROME2"):
                raise DecodeError("dicom_color", f"photometric interpretation {photometric!r} not supported")
            if int(ds.get("NumberOfFrames", 1) or 1) != 1:
                raise DecodeError("dicom_multiframe", "multi-frame DICOM is not supported")
            maxval = 2 ** int(ds.BitsStored) - 1
            _check_frames(ds)
            arr = ds.pixel_array
            if apply_voi_lut:
                arr = _apply_voi_lut(arr, ds, index=0)
    except DecodeError:
        raise
    except Exception as exc:
        # The class name only: pydicom's messages can quote element values.
        raise DecodeError("decode_failed", f"DICOM could not be decoded ({type(exc).__name__})") from exc
    if arr.ndim != 2:
        raise DecodeError("bad_shape", f"unexpected DICOM pixel array shape {arr.shape}")
    if photometric == "MONOCHROME1":
        if arr.max() > maxval:  # maxval - arr would wrap around for unsigned data
            raise DecodeError("bad_pixel_range", f"max pixel {arr.max()} above {maxval}")
        arr = maxval - arr
    return arr, maxval


@timed_decode
def decode(data: bytes, *, apply_voi_lut: bool | None = None) -> tuple[np.ndarray, int]:
    if _is_dicom(data):
        return decode_dicom(data, apply_voi_lut=apply_voi_lut)
    # A truncated image must fail to load, whatever a library set: Pillow otherwise fills it in.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as img:
            img.load()
            return _pil_to_array(img)
    except Exception as exc:
        raise DecodeError("decode_failed", f"{type(exc).__name__}: {exc}") from exc
