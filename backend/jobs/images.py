"""Validate an upload before any job exists, and decide what is stored.

Runs in the web process without torch. The format is recognised from the
bytes (magic numbers, the DICOM preamble), never from the file name or the
client's content type; a file that carries two signatures is refused. Each
format's decoder is told to open only that format, so a polyglot cannot be
read as something else. The whole image is decoded once here so that
truncated or corrupt files are refused with a 4xx instead of failing later in
a worker.

What is stored is not always the upload (docs/intake.md):
- DICOM: a new file with the decoded pixels and an allowlist of checked
  attributes (backend/jobs/dicom.py).
- PNG / JPEG: the same pixel data, with the chunks or segments that can carry
  free text or arbitrary data (tEXt, zTXt, iTXt, eXIf, iCCP, private chunks;
  EXIF, XMP, ICC, COM and other APPn segments) left out. Data after the end of
  the image is refused: that is where polyglots hide.
The dedup key stays the SHA-256 of the bytes as uploaded.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from backend.jobs import dicom, errors

ACCEPTED_FORMATS = ("PNG", "JPEG", "DICOM")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
)
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "DICOM": "dcm"}


@dataclass(frozen=True)
class InspectedImage:
    image_format: str
    width: int
    height: int
    mode: str

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.image_format]


@dataclass(frozen=True)
class AcceptedImage(InspectedImage):
    """An upload that passed every check, and the bytes to keep at rest."""

    stored_bytes: bytes = b""
    acquisition: dict[str, Any] = field(default_factory=dict)
    # A DICOM upload's Accession Number as received (intake's default reference); never stored plain.
    accession_number: str = field(default="", repr=False)


def detected_formats(data: bytes) -> list[str]:
    found = [name for magic, name in _MAGIC if data.startswith(magic)]
    if dicom.is_part10(data):
        found.append("DICOM")
    return found


def sniff_format(data: bytes) -> str | None:
    """The one format the bytes claim, or None (no signature, or more than one)."""
    found = detected_formats(data)
    return found[0] if len(found) == 1 else None


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


# --- what is kept of the upload's name and content type -------------------------------

_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")


def stored_filename(original_filename: str, *, keep: bool) -> str:
    """File names of medical images often carry a patient's name or ID: not kept unless configured."""
    return (original_filename or "")[:255] if keep else ""


def stored_content_type(content_type: str) -> str:
    """The bare type/subtype the client declared (informational only), never free text."""
    bare = (content_type or "").split(";", 1)[0].strip()
    return bare if _MIME.match(bare) else ""


# --- metadata stripping for PNG and JPEG ----------------------------------------------

# Fixed-layout chunks that carry no free text and no date (tIME, like the
# date:create / date:modify tEXt chunks image tools write, can be the exam date).
_PNG_KEEP = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD", b"pHYs"}
    | {b"hIST", b"cICP", b"mDCV", b"cLLI"}
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _trailing(data: bytes, end: int, image_format: str) -> None:
    if data[end:].strip(b"\x00"):
        raise errors.TrailingData(details={"format": image_format, "bytes_after_end": len(data) - end})


def strip_png(data: bytes) -> bytes:
    """The PNG without text, EXIF, ICC or unknown chunks. CRCs are checked; pixels are untouched."""
    out = [_PNG_SIGNATURE]
    pos, end = len(_PNG_SIGNATURE), len(data)
    while True:
        if pos + 12 > end:
            raise errors.InvalidImage(details={"format": "PNG", "reason": "truncated: no IEND chunk"})
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunk_type = data[pos + 4 : pos + 8]
        chunk_end = pos + 12 + length
        if length > 0x7FFFFFFF or chunk_end > end:
            raise errors.InvalidImage(details={"format": "PNG", "reason": "truncated chunk"})
        (crc,) = struct.unpack(">I", data[chunk_end - 4 : chunk_end])
        if zlib.crc32(data[pos + 4 : chunk_end - 4]) != crc:
            raise errors.InvalidImage(details={"format": "PNG", "reason": "chunk CRC mismatch"})
        if chunk_type in _PNG_KEEP:
            out.append(data[pos:chunk_end])
        pos = chunk_end
        if chunk_type == b"IEND":
            break
    _trailing(data, pos, "PNG")
    return b"".join(out)


# APP0 (JFIF) and APP14 (Adobe) tell the decoder the colour transform; every
# other APPn (EXIF, XMP, ICC, vendor blocks) and COM can hold anything.
_JPEG_KEEP_APP = frozenset({0xE0, 0xEE})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def strip_jpeg(data: bytes) -> bytes:
    """The JPEG without comments and metadata segments, walking every marker to EOI."""

    def truncated() -> errors.InvalidImage:
        return errors.InvalidImage(
            details={"format": "JPEG", "reason": "truncated or malformed marker stream"}
        )

    out = bytearray(b"\xff\xd8")
    pos, end = 2, len(data)
    while True:
        if pos >= end or data[pos] != 0xFF:
            raise truncated()
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            raise truncated()
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            out += b"\xff\xd9"
            break
        if marker in _JPEG_STANDALONE:
            out += bytes((0xFF, marker))
            continue
        if marker in (0x00, 0xD8) or pos + 2 > end:
            raise truncated()
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > end:
            raise truncated()
        is_metadata = marker == 0xFE or (0xE0 <= marker <= 0xEF and marker not in _JPEG_KEEP_APP)
        if not is_metadata:
            out += bytes((0xFF, marker)) + data[pos : pos + length]
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next real marker
            scan = pos
            while True:
                scan = data.find(b"\xff", scan)
                if scan < 0 or scan + 1 >= end:
                    raise truncated()
                following = data[scan + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    scan += 2
                    continue
                if following == 0xFF:
                    scan += 1
                    continue
                break
            out += data[pos:scan]
            pos = scan
    _trailing(data, pos, "JPEG")
    return bytes(out)


# --- decoding checks -------------------------------------------------------------------


def inspect_image(data: bytes, *, max_pixels: int, min_side: int) -> InspectedImage:
    """Open a PNG or JPEG with Pillow (that format only), check its size, decode it fully."""
    image_format = sniff_format(data)
    if image_format not in ("PNG", "JPEG"):
        raise errors.UnsupportedMediaType(details={"accepted": list(ACCEPTED_FORMATS)})
    # Pillow fills a truncated image in and says nothing when this is on; whatever a library set,
    # an upload must decode completely. (A JPEG scan cut short and closed with an EOI marker is
    # filled in by libjpeg-turbo either way: it warns, and Pillow drops the warning.)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
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


def _check_declared_size(data: bytes, image_format: str, *, max_pixels: int) -> None:
    """Refuse a pixel bomb from its header alone, before anything else reads the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[image_format]) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise errors.ImageTooManyPixels(details={"max_pixels": max_pixels}) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise errors.InvalidImage(details={"format": image_format, "reason": str(exc)[:200]}) from exc
    if width * height > max_pixels:
        raise errors.ImageTooManyPixels(details={"max_pixels": max_pixels, "width": width, "height": height})


def accept_image(
    data: bytes,
    *,
    max_pixels: int,
    min_side: int,
    dicom_max_header_bytes: int,
    dicom_accept_burned_in: bool = False,
) -> AcceptedImage:
    """Every check before a job exists; returns what to store (de-identified) or raises a 4xx."""
    found = detected_formats(data)
    if not found:
        raise errors.UnsupportedMediaType(details={"accepted": list(ACCEPTED_FORMATS)})
    if len(found) > 1:
        raise errors.AmbiguousFormat(details={"signatures": found, "accepted": list(ACCEPTED_FORMATS)})
    image_format = found[0]
    if image_format == "DICOM":
        image = dicom.accept_dicom(
            data,
            max_pixels=max_pixels,
            min_side=min_side,
            max_header_bytes=dicom_max_header_bytes,
            accept_burned_in=dicom_accept_burned_in,
        )
        return AcceptedImage(
            image_format="DICOM",
            width=image.columns,
            height=image.rows,
            mode=image.photometric,
            stored_bytes=image.stored_bytes,
            acquisition=image.acquisition,
            accession_number=image.accession_number,
        )
    _check_declared_size(data, image_format, max_pixels=max_pixels)
    stored = strip_png(data) if image_format == "PNG" else strip_jpeg(data)
    info = inspect_image(stored, max_pixels=max_pixels, min_side=min_side)
    return AcceptedImage(
        image_format=info.image_format,
        width=info.width,
        height=info.height,
        mode=info.mode,
        stored_bytes=stored,
    )
