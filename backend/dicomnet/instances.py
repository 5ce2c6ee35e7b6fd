"""What a received instance says about itself, read before intake decides whether it is scored.

A PACS sends every instance of a study: images cxrq scores, images it does not, and objects that
are not images at all (SR, presentation states, key object selections, encapsulated PDF, ...),
including the SR and Secondary Capture cxrq itself filed in the study. This reads the few
attributes that sort them, from the Part 10 file the receiver rebuilt from the C-STORE, and
checks the dataset can be walked to its end: an instance that cannot is refused as corrupt.

Only element values named here are converted; every other element (Pixel Data included) is
skipped by its length, so the cost is a walk over the bytes already in memory. A Deflated dataset
is not read here (pydicom would inflate it whole, unbounded): intake inflates with a bound, and
the receiver offers Deflated only for the image classes intake reads.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import pydicom
from pydicom.filereader import data_element_generator
from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian

# Deflated datasets (the whole dataset is zlib-compressed): Deflated Explicit VR Little Endian
# and JPIP Referenced Deflate.
DEFLATED_DATASET_SYNTAXES = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

# What cxrq writes into every object it makes (backend/interop/sr.py MANUFACTURER): its SR, its
# Secondary Capture, and anything it makes later. A modality's own images never say this.
OWN_MANUFACTURER = "cxrq"

_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "Manufacturer",
    "Modality",
    "Rows",
]
_TRUNCATED = re.compile(r"end of file|before delimiter|truncat", re.IGNORECASE)
# (FFFE,E0DD) with a zero length, as it closes an undefined-length value.
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_SEQUENCE_DELIMITER_BIG_ENDIAN = b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_UID_SHAPE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class Unreadable(Exception):
    """The dataset cannot be read to its end (truncated or corrupt). Says nothing of its content."""


@dataclass(frozen=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    manufacturer: str
    modality: str
    has_rows: bool

    @property
    def is_image(self) -> bool:
        """Has an Image Pixel module (Rows is Type 1 there); SR, PR, KO, PDF, waveforms have none."""
        return self.has_rows

    @property
    def is_own_output(self) -> bool:
        return self.manufacturer.strip().lower() == OWN_MANUFACTURER


def sop_class_name(uid: str) -> str:
    """The SOP class's name for a UID pydicom knows; "unknown" otherwise (never free text)."""
    if not _UID_SHAPE.match(uid or "") or len(uid) > 64:
        return "unknown"
    name = UID(uid).name
    return name if name != uid else "unknown"


def safe_uid(uid: str) -> str:
    return uid if _UID_SHAPE.match(uid or "") and len(uid) <= 64 else ""


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def read_header(part10: bytes) -> InstanceHeader:
    """The instance's sorting attributes; Unreadable if the file meta or the dataset cannot be
    walked to the end of the bytes (a value running past the end is truncation)."""
    fp = io.BytesIO(part10)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Kept here, never shown: pydicom's warnings quote the values they complain about (a
            # patient's name can be one). One of them is the only sign of a cut in an
            # undefined-length value (an encapsulated Pixel Data without its delimiter).
            warnings.simplefilter("always")
            ds = pydicom.dcmread(fp, specific_tags=_TAGS)
            if any(_TRUNCATED.search(str(w.message)) for w in caught):
                raise Unreadable("truncated")
            if str(ds.file_meta.get("TransferSyntaxUID", "")) in DEFLATED_DATASET_SYNTAXES:
                raise Unreadable("deflated")
            header = InstanceHeader(
                sop_class_uid=_text(ds, "SOPClassUID"),
                sop_instance_uid=_text(ds, "SOPInstanceUID"),
                study_instance_uid=_text(ds, "StudyInstanceUID"),
                manufacturer=_text(ds, "Manufacturer"),
                modality=_text(ds, "Modality"),
                has_rows="Rows" in ds,
            )
        if not (header.sop_class_uid and header.sop_instance_uid):
            raise Unreadable("no SOP Class or Instance UID")
    except Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds; the message may quote values
        raise Unreadable(type(exc).__name__) from None
    has_pixels = _check_complete(part10, ds.file_meta)
    if header.has_rows and not has_pixels:
        raise Unreadable("an image without pixel data")  # cut at the element before them
    return header


def _check_complete(part10: bytes, meta: pydicom.Dataset) -> bool:
    """The top-level elements end exactly where the bytes do (pydicom stops quietly at a cut inside
    an element's header and passes a value by seeking, even past the end: either is a cut file);
    whether a pixel data element is among them. A cut exactly between two elements cannot be
    told from a shorter dataset, but an image cut before its pixels can."""
    group_length = meta.get("FileMetaInformationGroupLength")
    if group_length is None:
        raise Unreadable("no file meta group length")
    # Preamble and DICM, then (0002,0000) itself (12 bytes explicit VR) and the group it measures.
    fp = io.BytesIO(part10)
    fp.seek(128 + 4 + 12 + int(group_length))
    syntax = str(meta.get("TransferSyntaxUID", ""))
    end = fp.tell()
    has_pixels = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            little = syntax != ExplicitVRBigEndian
            delimiter = _SEQUENCE_DELIMITER if little else _SEQUENCE_DELIMITER_BIG_ENDIAN
            for element in data_element_generator(
                fp,
                is_implicit_VR=syntax == ImplicitVRLittleEndian,
                is_little_endian=little,
                defer_size=0,  # values passed by seeking, never read
            ):
                end = fp.tell()
                has_pixels = has_pixels or element.tag in _PIXEL_TAGS
                # An undefined-length value ends with its delimiter, or the bytes ran out first:
                # said by its position, not only by pydicom's warning (the warnings filter is
                # process-wide, and another thread may hold it).
                if _undefined_length(element) and part10[end - 8 : end] != delimiter:
                    raise Unreadable("truncated")
            if any(_TRUNCATED.search(str(w.message)) for w in caught):
                raise Unreadable("truncated")
    except Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - the message may quote values
        raise Unreadable(type(exc).__name__) from None
    if end != len(part10):
        raise Unreadable("truncated")
    return has_pixels


def _undefined_length(element: object) -> bool:
    # A RawDataElement keeps the length as read; a parsed sequence (DataElement) says so itself.
    if getattr(element, "length", None) == _UNDEFINED_LENGTH:
        return True
    return bool(getattr(element, "is_undefined_length", False))
