"""DICOM intake: recognise a Part 10 file, check it from its header, decode it once, de-identify it.

Runs in the web process (pydicom + numpy, no torch). The order matters:

1. Recognised by the preamble (``DICM`` at offset 128), or, without one, by a file meta group
   (0002) or a little-endian dataset (group 0008) at offset 0: such a file is given the
   preamble and file meta it lacks (the transfer syntax pydicom's ``force`` reading would
   guess), so everything below reads one shape. A Deflated dataset is inflated with a bound
   (never more than an uncompressed upload may be) and read as Explicit VR Little Endian.
2. Header read with ``stop_before_pixels`` from at most DICOM_MAX_HEADER_BYTES:
   transfer syntax, SOP class, whether it is a chest X-ray (backend/jobs/eligibility.py),
   burned-in annotation flag, frames, colour, bit depth and Rows x Columns x frames are
   all refused here, before a single pixel is decoded.
3. The Pixel Data element alone is read and decoded once, so truncated or
   corrupt pixel data is a 4xx now rather than a failed job later.
4. A new file is written from an allowlist: the decoded pixels (uncompressed)
   and the few attributes the pipeline needs, each checked against a list of
   defined terms or a numeric range. Nothing else of the upload survives:
   no patient, study or institution attribute, no private tag, no UID, no
   overlay, and no byte of the original encapsulated JPEG / JPEG 2000 streams
   (which can carry comments or metadata boxes of their own).

See docs/intake.md for what is kept and why.
"""

from __future__ import annotations

import io
import logging
import math
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from django.conf import settings
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from backend.jobs import eligibility, errors

# pydicom's validation messages quote element values (a patient's name can be
# one): never let them reach a log line or a warning.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
logging.getLogger("pydicom").setLevel(logging.ERROR)

PREAMBLE_LENGTH = 128
MAGIC = b"DICM"

# Single-frame projection radiographs. Everything else (SR, presentation
# states, CT, MR, waveforms, ...) is refused with the list below.
IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
}

# Transfer syntaxes whose pixel data the installed decoders read (pydicom's
# own for native, big endian included, and RLE, pylibjpeg-libjpeg for JPEG / JPEG-LS,
# pylibjpeg-openjpeg for JPEG 2000). Deflated is not handed to pydicom, which inflates
# the whole dataset in one call (an unbounded zip bomb): _inflated does it with a bound.
TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 and 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1 (Process 14, Selection Value 1)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
DEFLATED = "1.2.840.10008.1.2.1.99"
DEFLATED_NAME = "Deflated Explicit VR Little Endian"
_LOSSY_SYNTAX_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # may be lossless; flagged lossy to be safe
}

# The one pydicom plugin that decodes each compressed syntax. Left to itself pydicom tries its
# plugins in turn and keeps the first answer, so a strict decoder's refusal is overruled by a lax
# one: libjpeg decodes a truncated JPEG-LS scan without a word (the rows it lacks filled in) where
# CharLS (pyjpegls) reports it. libjpeg stays for the JPEG processes (the decoder of the reference
# reader; no installed decoder, Pillow's libjpeg-turbo included, reports a scan cut short before
# an EOI marker, so the marker is checked instead: frame_is_complete), openjpeg for JPEG 2000
# (it refuses a cut codestream), pydicom's own RLE decoder (it checks every segment's length).
DECODING_PLUGINS: dict[str, str] = {
    RLE_LOSSLESS: "pydicom",
    "1.2.840.10008.1.2.4.50": "pylibjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg",
}
# JPEG's and JPEG-LS's EOI and JPEG 2000's EOC: the same two bytes, which none of the three lets
# appear inside coded data (byte stuffing), so a frame ending with them was not cut.
CODESTREAM_END = b"\xff\xd9"

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
DEIDENTIFICATION_METHOD = "cxrq allowlist v1: pixels and acquisition attributes only"

# Modality, Body Part Examined and View Position are kept only as the eligibility check
# (backend/jobs/eligibility.py) read them: a value it refuses never gets this far, and one it
# accepts is a code string the client's rules name.
_CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")
# Value representations an Explicit VR element may carry (PS3.5 6.2): how a file meta group or
# a bare dataset at offset 0 is told from other bytes.
_EXPLICIT_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_PIXEL_TAGS = {
    b"\xe0\x7f\x10\x00": "PixelData",
    b"\xe0\x7f\x08\x00": "FloatPixelData",
    b"\xe0\x7f\x09\x00": "DoubleFloatPixelData",
}
_PHOTOMETRIC_TERMS = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}
)
_UID_SHAPE = re.compile(r"^[0-9.]{1,64}$")


@dataclass(frozen=True)
class DicomImage:
    """A DICOM upload that passed every check, with the de-identified file to store."""

    rows: int
    columns: int
    photometric: str
    bits_stored: int
    transfer_syntax: str
    stored_bytes: bytes
    acquisition: dict[str, Any] = field(default_factory=dict)
    facts: eligibility.Facts = field(default_factory=eligibility.Facts)
    # As received, before de-identification: intake's default job reference (a client's
    # reference_from_dicom rule). Identifying: sealed on the job, never logged, never stored plain.
    accession_number: str = field(default="", repr=False)


def _leading_element(data: bytes, group: bytes) -> str | None:
    """Whether the bytes open with a little-endian element of this group: "explicit", "implicit" or None."""
    if len(data) < 12 or data[:2] != group:
        return None
    if data[4:6] in _EXPLICIT_VRS:
        return "explicit"
    (length,) = struct.unpack("<I", data[4:8])
    return "implicit" if length % 2 == 0 and length <= min(len(data) - 8, 1024) else None


def _arrival(data: bytes) -> str | None:
    """How a DICOM file arrived: "part10" (preamble + DICM), "no_preamble" (file meta at offset 0),
    "bare_dataset" (no file meta either: what pydicom reads only with force), or None: not DICOM."""
    if data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] == MAGIC:
        return "part10"
    if data[:4] == MAGIC and _leading_element(data[4:], b"\x02\x00") == "explicit":
        return "no_preamble"  # the prefix without the 128 bytes before it
    if _leading_element(data, b"\x02\x00") == "explicit":  # the file meta is always explicit VR LE
        return "no_preamble"
    if _leading_element(data, b"\x08\x00"):
        return "bare_dataset"
    return None


def is_part10(data: bytes) -> bool:
    """A DICOM file: a Part 10 file, or one that lacks its 128-byte preamble (and file meta)."""
    return _arrival(data) is not None


def _meta_bytes(meta: FileMetaDataset) -> bytes:
    out = FileMetaDataset()
    for element in meta:
        if element.tag != 0x00020000:  # the group length is recomputed
            out.add(element)
    buf = io.BytesIO()
    write_file_meta_info(buf, out, enforce_standard=False)
    return buf.getvalue()


def _as_part10(data: bytes) -> tuple[bytes, str]:
    """The upload as a Part 10 file: a missing preamble (and, for a bare dataset, file meta naming
    the transfer syntax pydicom's force reading would guess) put in front; the rest untouched."""
    arrival = _arrival(data)
    if arrival == "part10":
        return data, arrival
    if arrival == "no_preamble":
        return b"\x00" * PREAMBLE_LENGTH + (b"" if data[:4] == MAGIC else MAGIC) + data, arrival
    if arrival == "bare_dataset":
        meta = FileMetaDataset()
        explicit = _leading_element(data, b"\x08\x00") == "explicit"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
        return b"\x00" * PREAMBLE_LENGTH + MAGIC + _meta_bytes(meta) + data, arrival
    raise _invalid("not a DICOM file")


def _inflated(data: bytes, meta: FileMetaDataset, meta_end: int, *, max_inflated_bytes: int) -> bytes:
    """A Deflated file as the Explicit VR Little Endian file it encodes, inflating at most
    max_inflated_bytes (+1 to know it is more): a zip bomb stops at the bound."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        body = inflater.decompress(data[meta_end:], max_inflated_bytes + 1)
    except zlib.error as exc:
        raise _invalid("Deflated data could not be inflated", exc) from exc
    if len(body) > max_inflated_bytes:
        raise errors.DicomInflatedTooLarge(details={"max_inflated_bytes": max_inflated_bytes})
    if not inflater.eof:  # zlib hands back what a cut stream holds without complaint
        raise _invalid("Deflated data is truncated")
    plain = FileMetaDataset()
    for element in meta:
        plain.add(element)
    plain.TransferSyntaxUID = ExplicitVRLittleEndian
    return data[:PREAMBLE_LENGTH] + MAGIC + _meta_bytes(plain) + body


def _invalid(reason: str, exc: BaseException | None = None) -> errors.InvalidImage:
    # Only our own words and the exception's class name: pydicom's messages
    # can quote element values.
    details: dict[str, Any] = {"format": "DICOM", "reason": reason}
    if exc is not None:
        details["error"] = type(exc).__name__
    return errors.InvalidImage(details=details)


def _safe_uid(value: Any) -> str:
    text = str(value or "")
    return text if _UID_SHAPE.match(text) else "(not a UID)"


def _int_attr(ds: Dataset, keyword: str, *, default: int | None = None) -> int:
    value = ds.get(keyword, None)
    if value is None or value == "":
        if default is not None:
            return default
        raise _invalid(f"missing required attribute {keyword}")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise _invalid(f"attribute {keyword} is not an integer", exc) from exc
    return number


def _read_file_meta(data: bytes, *, max_header_bytes: int) -> tuple[FileMetaDataset, int]:
    """Group 0002 alone, and where it ends: the transfer syntax must be known good before the
    dataset is parsed, since pydicom inflates a Deflated dataset whole while reading it (a zip bomb)."""
    fp = io.BytesIO(data[:max_header_bytes])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_preamble(fp, False)
            # pydicom's public read_file_meta_info wants a path; this is what it calls.
            meta = _read_file_meta_info(fp)
            for _ in meta.iterall():  # converted inside this guard
                pass
            return meta, fp.tell()
    except Exception as exc:
        raise _invalid("DICOM file meta information could not be parsed", exc) from exc


def _read_header(data: bytes, *, max_header_bytes: int) -> tuple[Dataset, int]:
    """Header up to (not including) the pixel data, and the offset where the pixel element starts."""
    head = io.BytesIO(data[:max_header_bytes])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(head, stop_before_pixels=True)
            # Parse every element now, inside this guard: pydicom converts lazily.
            for _ in ds.iterall():
                pass
    except RecursionError as exc:
        raise _invalid("DICOM header nests sequences too deeply", exc) from exc
    except Exception as exc:
        raise _invalid("DICOM header could not be parsed", exc) from exc
    return ds, head.tell()


def _transfer_syntax(meta: FileMetaDataset) -> UID:
    ts = meta.get("TransferSyntaxUID")
    if not ts:
        raise _invalid("missing Transfer Syntax UID in the file meta information")
    if str(ts) not in TRANSFER_SYNTAXES:
        raise errors.DicomUnsupportedTransferSyntax(
            details={"transfer_syntax": _safe_uid(ts), "accepted": sorted(TRANSFER_SYNTAXES.values())}
        )
    return UID(str(ts))


def _check_object(ds: Dataset, *, accept_burned_in: bool) -> str:
    sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID") or "")
    if sop_class not in IMAGE_SOP_CLASSES:
        known = UID(sop_class).name if _UID_SHAPE.match(sop_class) else ""
        raise errors.DicomUnsupportedObject(
            details={
                "sop_class_uid": _safe_uid(sop_class),
                "sop_class": known if known != sop_class else "unknown",
                "accepted": sorted(IMAGE_SOP_CLASSES.values()),
            }
        )
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES" and not accept_burned_in:
        raise errors.DicomBurnedInAnnotation()
    return sop_class


def _check_geometry(ds: Dataset, *, max_pixels: int, min_side: int) -> tuple[int, int, int]:
    """Rows, columns, bits stored: everything here is refused before any pixel is decoded."""
    rows = _int_attr(ds, "Rows")
    columns = _int_attr(ds, "Columns")
    frames = _int_attr(ds, "NumberOfFrames", default=1)
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise _invalid("Rows, Columns and Number of Frames must be positive")
    if rows * columns * frames > max_pixels:
        raise errors.ImageTooManyPixels(
            details={"max_pixels": max_pixels, "width": columns, "height": rows, "frames": frames}
        )
    if frames != 1:
        raise errors.DicomMultiFrame(details={"frames": frames})
    samples = _int_attr(ds, "SamplesPerPixel", default=1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in MONOCHROME:
        raise errors.DicomColor(
            details={
                "samples_per_pixel": samples,
                "photometric_interpretation": photometric if photometric in _PHOTOMETRIC_TERMS else "other",
                "accepted": list(MONOCHROME),
            }
        )
    bits_allocated = _int_attr(ds, "BitsAllocated")
    bits_stored = _int_attr(ds, "BitsStored", default=bits_allocated)
    # Signed pixels (PixelRepresentation 1) are read as pydicom reads them; a negative value is
    # refused after decoding (accept_dicom), as torchxrayvision's normalize refuses it.
    representation = _int_attr(ds, "PixelRepresentation", default=0)
    if (
        bits_allocated not in (8, 16)
        or not 1 <= bits_stored <= bits_allocated
        or representation not in (0, 1)
    ):
        raise errors.DicomUnsupportedPixels(
            details={
                "bits_allocated": bits_allocated,
                "bits_stored": bits_stored,
                "pixel_representation": representation,
                "accepted": "integers, 8 or 16 bits allocated; signed ones only with non-negative values",
            }
        )
    if min(rows, columns) < min_side:
        raise errors.ImageTooSmall(details={"min_side": min_side, "width": columns, "height": rows})
    return rows, columns, bits_stored


_JPEG_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})  # + JPEG-LS SOF55


def _codestream_size(frame: bytes, ts: UID) -> tuple[int, int] | None:
    """(rows, columns) that a JPEG / JPEG-LS / JPEG 2000 frame declares, read from its header."""
    if str(ts).startswith("1.2.840.10008.1.2.4.9"):  # JPEG 2000: SOC then SIZ
        at = frame.find(b"\xff\x4f\xff\x51")
        if at < 0 or at + 24 > len(frame):
            return None
        x, y, x0, y0 = struct.unpack(">IIII", frame[at + 8 : at + 24])
        return y - y0, x - x0
    pos = 2 if frame[:2] == b"\xff\xd8" else -1
    while 0 <= pos < len(frame) - 9:
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", frame[pos + 5 : pos + 9])
            return height, width
        if marker == 0xDA:
            return None
        (length,) = struct.unpack(">H", frame[pos + 2 : pos + 4])
        pos += 2 + length
    return None


def frame_is_complete(frame: bytes) -> bool:
    """Whether a JPEG, JPEG-LS or JPEG 2000 frame ends with its end marker, after the padding that
    makes a fragment's length even (0x00 as PS3.5 A.4 asks, or 0xFF as some encoders write: pydicom's
    own JPGExtended.dcm). libjpeg decodes a frame cut anywhere in its scan (the rows it lacks filled
    in) and reports nothing; the missing marker is what gives the cut away."""
    return frame.rstrip(b"\x00\xff").endswith(CODESTREAM_END)


def _check_codestream(ds: Dataset, ts: UID) -> None:
    """A compressed frame must be whole: it ends with its end marker (frame_is_complete). And it is
    decoded to the size its own header declares, not to Rows x Columns: a 1 KiB frame can declare
    60000 x 60000. Both are checked before the decoder allocates anything."""
    if not ts.is_encapsulated or str(ts) == RLE_LOSSLESS:  # RLE decodes to Rows x Columns
        return
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    if not frame_is_complete(frame):
        raise _invalid("compressed frame is truncated: it does not end with its end-of-image marker")
    size = _codestream_size(frame, ts)
    if size is None:
        raise _invalid("compressed pixel data has no readable frame header")
    if size != (int(ds.Rows), int(ds.Columns)):
        raise _invalid("compressed frame size does not match Rows x Columns")


def _decode_pixels(ds: Dataset, data: bytes, offset: int, ts: UID) -> np.ndarray:
    """Read the Pixel Data element alone (whatever follows it is ignored) and decode it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp = io.BytesIO(data)
            fp.seek(offset)
            raw = next(data_element_generator(fp, ts.is_implicit_VR, ts.is_little_endian))
            if raw.value is None or len(raw.value) == 0:
                raise errors.DicomNoPixelData()
            ds.PixelData = raw.value
            element = ds["PixelData"]
            if ts.is_encapsulated:
                element.VR = "OB"
                element.is_undefined_length = True
                _check_codestream(ds, ts)
                ds.pixel_array_options(decoding_plugin=DECODING_PLUGINS[str(ts)])
            else:
                element.VR = "OB" if int(ds.BitsAllocated) == 8 else "OW"
            arr = ds.pixel_array
    except (errors.DicomNoPixelData, errors.InvalidImage):
        raise
    except RecursionError as exc:
        raise _invalid("DICOM pixel data could not be read", exc) from exc
    except Exception as exc:
        raise _invalid("DICOM pixel data is truncated or corrupt", exc) from exc
    if arr.shape != (int(ds.Rows), int(ds.Columns)):
        raise _invalid("decoded pixel data does not match Rows x Columns")
    return arr


def _pixel_data_offset(data: bytes, offset: int, ts: UID | None = None) -> None:
    tag = bytes(data[offset : offset + 4])
    if ts is not None and not ts.is_little_endian:  # (7FE0,0010) is 7F E0 00 10 in big endian
        tag = tag[1::-1] + tag[3:1:-1]
    kind = _PIXEL_TAGS.get(tag)
    if kind == "PixelData":
        return
    if kind is not None:
        raise errors.DicomUnsupportedPixels(details={"pixel_data": kind, "accepted": "integer Pixel Data"})
    raise errors.DicomNoPixelData()


def _check_header_size(data: bytes, offset: int, *, max_header_bytes: int) -> None:
    """The header parse stopped at the cut, not at the pixel data: nothing in it can be trusted."""
    if len(data) > max_header_bytes and offset >= max_header_bytes - 12:
        raise errors.DicomHeaderTooLarge(details={"max_header_bytes": max_header_bytes})


# --- what is kept ---------------------------------------------------------------


def _term(ds: Dataset, keyword: str, allowed: frozenset[str]) -> str | None:
    value = ds.get(keyword)
    if value is None or isinstance(value, (list, tuple, Sequence)):
        return None
    text = str(value).strip().upper()
    return text if text in allowed else None


def _floats(value: Any, *, count: int | None = None, low: float, high: float) -> list[float] | None:
    if value is None or value == "":
        return None
    items = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    if not items or len(items) > 16 or (count is not None and len(items) != count):
        return None
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and low <= v <= high for v in numbers):
        return None
    return numbers


def _pixel_spacing(ds: Dataset) -> tuple[str, list[float]] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _floats(ds.get(keyword), count=2, low=1e-4, high=10.0)
        if spacing is not None and all(v > 0 for v in spacing):
            return keyword, spacing
    return None


def _voi_lut_items(ds: Dataset) -> list[Dataset]:
    """VOI LUT Sequence items, numbers only (LUT Explanation is free text and dropped)."""
    seq = ds.get("VOILUTSequence")
    if not seq or len(seq) > 8:
        return []
    items = []
    for item in seq:
        if "LUTDescriptor" not in item or "LUTData" not in item:
            return []
        descriptor = item["LUTDescriptor"]
        lut = item["LUTData"]
        if descriptor.VR not in ("US", "SS") or lut.VR not in ("US", "OW"):
            return []
        try:
            entries, _first, bits = (int(v) for v in descriptor.value)
        except (TypeError, ValueError):
            return []
        if not 8 <= bits <= 16:
            return []
        new = Dataset()
        new.add_new("LUTDescriptor", descriptor.VR, list(descriptor.value))
        new.add_new("LUTData", lut.VR, lut.value)
        if entries < 0:
            return []
        items.append(new)
    return items


def _window(ds: Dataset) -> tuple[list[float], list[float]] | None:
    center = _floats(ds.get("WindowCenter"), low=-1e7, high=1e7)
    width = _floats(ds.get("WindowWidth"), low=1e-6, high=1e7)
    if center is None or width is None or len(center) != len(width):
        return None
    return center, width


def _facts(ds: Dataset) -> eligibility.Facts:
    return eligibility.facts_from(
        modality=ds.get("Modality"), body_part=ds.get("BodyPartExamined"), view=ds.get("ViewPosition")
    )


def _deidentified_dataset(
    ds: Dataset, arr: np.ndarray, *, sop_class: str, ts: UID, bits_stored: int, facts: eligibility.Facts
) -> tuple[Dataset, dict[str, Any]]:
    """A new dataset holding only the pixels and allowlisted, checked values."""
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    out = Dataset()
    out.SOPClassUID = sop_class
    out.SOPInstanceUID = generate_uid()  # 2.25.<random>: no link back to the original
    out.StudyInstanceUID = generate_uid()
    out.SeriesInstanceUID = generate_uid()
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEIDENTIFICATION_METHOD
    acquisition: dict[str, Any] = {"sop_class": IMAGE_SOP_CLASSES[sop_class]}

    # As the eligibility check read them. Where no check ran here (the caller checks after), a
    # value that is no code string is recorded, not written, and any check refuses it.
    for keyword, key, value in (
        ("Modality", "modality", facts.modality),
        ("ViewPosition", "view_position", facts.view),
        ("BodyPartExamined", "body_part_examined", facts.body_part),
    ):
        if value is not None:
            acquisition[key] = value
            if _CODE_STRING.match(value):
                setattr(out, keyword, value)
    spacing = _pixel_spacing(ds)
    if spacing:
        keyword, values = spacing
        setattr(out, keyword, [f"{v:.6g}" for v in values])
        acquisition["pixel_spacing_mm"] = values
        acquisition["pixel_spacing_attribute"] = keyword
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() in ("YES", "NO"):
        out.BurnedInAnnotation = str(ds.BurnedInAnnotation).strip().upper()

    # Lossy once, lossy for ever (PS3.3 C.7.6.1.1.5): the uncompressed copy says so.
    lossy_method = _LOSSY_SYNTAX_METHOD.get(str(ts))
    if str(ds.get("LossyImageCompression", "")).strip() == "01" or lossy_method:
        out.LossyImageCompression = "01"
        if lossy_method:
            out.LossyImageCompressionMethod = lossy_method
    acquisition["lossy_compression"] = "LossyImageCompression" in out

    # What torchxrayvision's reader (and CXRQ_DICOM_APPLY_VOI_LUT) needs.
    window = _window(ds)
    if window:
        out.WindowCenter = [f"{v:.6g}" for v in window[0]]
        out.WindowWidth = [f"{v:.6g}" for v in window[1]]
        function = _term(ds, "VOILUTFunction", frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"}))
        if function:
            out.VOILUTFunction = function
    voi_items = _voi_lut_items(ds)
    if voi_items:
        out.VOILUTSequence = Sequence(voi_items)

    rows, columns = arr.shape
    bits_allocated = int(ds.BitsAllocated)
    out.SamplesPerPixel = 1
    out.PhotometricInterpretation = photometric
    out.Rows = rows
    out.Columns = columns
    out.BitsAllocated = bits_allocated
    out.BitsStored = bits_stored
    out.HighBit = bits_stored - 1
    out.PixelRepresentation = 0
    dtype = np.dtype("<u1") if bits_allocated == 8 else np.dtype("<u2")
    pixels = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    if len(pixels) % 2:
        pixels += b"\x00"
    out.PixelData = pixels
    out["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"

    acquisition.update(
        {
            "photometric_interpretation": photometric,
            "bits_stored": bits_stored,
            "rows": rows,
            "columns": columns,
            "transfer_syntax": TRANSFER_SYNTAXES[str(ts)],
        }
    )
    return out, acquisition


def _write(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.preamble = b"\x00" * PREAMBLE_LENGTH
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def accept_dicom(
    data: bytes,
    *,
    max_pixels: int,
    min_side: int,
    max_header_bytes: int,
    accept_burned_in: bool,
    rules: eligibility.EligibilityRules | None = None,
    max_inflated_bytes: int | None = None,
) -> DicomImage:
    """Validate a DICOM upload and return the de-identified file to store, or raise a 4xx.

    rules: whether it is a chest X-ray is checked from the header, before any pixel is decoded
    (NotChestXray); None leaves that to the caller, with DicomImage.facts.
    max_inflated_bytes: how far a Deflated file may inflate (default CXRQ_UPLOAD_MAX_BYTES).
    """
    data, arrival = _as_part10(data)
    meta, meta_end = _read_file_meta(data, max_header_bytes=max_header_bytes)
    uploaded_syntax = str(meta.get("TransferSyntaxUID") or "")
    if uploaded_syntax == DEFLATED:
        if max_inflated_bytes is None:
            max_inflated_bytes = settings.UPLOAD_MAX_BYTES
        data = _inflated(data, meta, meta_end, max_inflated_bytes=max_inflated_bytes)
        meta, _ = _read_file_meta(data, max_header_bytes=max_header_bytes)
    ts = _transfer_syntax(meta)
    ds, offset = _read_header(data, max_header_bytes=max_header_bytes)
    _check_header_size(data, offset, max_header_bytes=max_header_bytes)
    if str(ds.file_meta.get("TransferSyntaxUID", "")) != str(ts):
        raise _invalid("inconsistent file meta information")
    sop_class = _check_object(ds, accept_burned_in=accept_burned_in)
    facts = _facts(ds)
    if rules is not None:
        facts = eligibility.check_eligibility(
            **facts.as_dict(), sop_class=IMAGE_SOP_CLASSES[sop_class], rules=rules
        )
    rows, columns, bits_stored = _check_geometry(ds, max_pixels=max_pixels, min_side=min_side)
    _pixel_data_offset(data, offset, ts)
    arr = _decode_pixels(ds, data, offset, ts)
    if arr.dtype.kind not in "ui":
        raise errors.DicomUnsupportedPixels(details={"accepted": "integer Pixel Data"})
    maxval = 2**bits_stored - 1
    if int(arr.max()) > maxval or int(arr.min()) < 0:
        # torchxrayvision's reader refuses these too (normalize raises).
        raise errors.DicomUnsupportedPixels(
            "Pixel values must lie in 0 .. 2**BitsStored - 1: negative (signed) values and values "
            "above Bits Stored are not accepted.",
            details={"bits_stored": bits_stored, "reason": "pixel values outside 0 .. 2**BitsStored - 1"},
        )
    out, acquisition = _deidentified_dataset(
        ds, arr, sop_class=sop_class, ts=ts, bits_stored=bits_stored, facts=facts
    )
    if uploaded_syntax == DEFLATED:
        acquisition["transfer_syntax"] = DEFLATED_NAME
    if arrival != "part10":
        acquisition["file_layout"] = arrival
    return DicomImage(
        rows=rows,
        columns=columns,
        photometric=out.PhotometricInterpretation,
        bits_stored=bits_stored,
        transfer_syntax=uploaded_syntax if uploaded_syntax == DEFLATED else str(ts),
        stored_bytes=_write(out),
        acquisition=acquisition,
        facts=facts,
        accession_number=_accession_number(ds),
    )


def _accession_number(ds: Dataset) -> str:
    """The Accession Number as received ("" when absent or unreadable)."""
    try:
        value = ds.get("AccessionNumber")
    except Exception:  # noqa: BLE001 - a malformed value is no reference, never a refusal
        return ""
    return str(value or "").strip()
