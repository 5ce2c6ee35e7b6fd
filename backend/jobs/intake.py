"""Validate an upload before any job exists: size, format by content, decodability, pixels.

Runs in the web process without torch. The format is recognised from the
bytes (magic numbers), never from the file name or the client's content type,
and Pillow is told to open only that format, so a polyglot cannot be read as
something else. The whole image is decoded once here so that truncated or
corrupt files are refused with a 4xx instead of failing later in a worker.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from backend.jobs import errors

ACCEPTED_FORMATS = ("PNG", "JPEG")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
)
EXTENSIONS = {"PNG": "png", "JPEG": "jpg"}


@dataclass(frozen=True)
class InspectedImage:
    image_format: str
    width: int
    height: int
    mode: str

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.image_format]


def sniff_format(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def read_upload(upload, *, max_bytes: int) -> bytes:
    """Read at most max_bytes + 1 so an oversized upload is refused without holding it all."""
    if upload is None:
        raise errors.MissingImage()
    if upload.size is not None and upload.size > max_bytes:
        raise errors.FileTooLarge(details={"max_bytes": max_bytes, "size": upload.size})
    upload.seek(0)
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise errors.FileTooLarge(details={"max_bytes": max_bytes})
    if not data:
        raise errors.EmptyFile()
    return data


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inspect_image(data: bytes, *, max_pixels: int, min_side: int) -> InspectedImage:
    image_format = sniff_format(data)
    if image_format is None:
        raise errors.UnsupportedMediaType(details={"accepted": list(ACCEPTED_FORMATS)})
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that: treat it as an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[image_format]) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise errors.ImageTooManyPixels(
                        details={"max_pixels": max_pixels, "width": width, "height": height}
                    )
                img.load()  # full decode: catches truncated and corrupt data
                mode = img.mode
    except errors.ImageTooManyPixels:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise errors.ImageTooManyPixels(details={"max_pixels": max_pixels}) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise errors.InvalidImage(details={"format": image_format, "reason": str(exc)[:200]}) from exc
    if min(width, height) < min_side:
        raise errors.ImageTooSmall(details={"min_side": min_side, "width": width, "height": height})
    return InspectedImage(
        image_format=image_format,
        width=width,
        height=height,
        mode=mode,
    )
