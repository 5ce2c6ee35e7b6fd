"""Test images made from the samples at test time (no generated binaries in the repository)."""

from __future__ import annotations

import copy
import io
import struct
import zlib
from functools import cache

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from tests.factories import sample_bytes

MONO2_SAMPLE = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
MONO1_SAMPLE = "Fake_MONOHR1.dcm"
DICOM_SAMPLES = (MONO2_SAMPLE, MONO1_SAMPLE)
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@cache
def _mono2_pixels() -> np.ndarray:
    return read(sample_bytes(MONO2_SAMPLE)).pixel_array


def sample_dataset() -> Dataset:
    return read(sample_bytes(MONO2_SAMPLE))


def uncompressed(ds: Dataset, pixels: np.ndarray | None = None, *, implicit: bool = False) -> Dataset:
    """ds with native pixel data (Explicit or Implicit VR Little Endian)."""
    out = copy.deepcopy(ds)
    arr = out.pixel_array if pixels is None else pixels
    bits = 8 if arr.dtype == np.uint8 else 16
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if keyword in out and pixels is not None:
            del out[keyword]
    out.BitsAllocated = bits
    out.PixelData = arr.astype(f"<u{bits // 8}").tobytes()
    out["PixelData"].VR = "OB" if bits == 8 else "OW"
    out["PixelData"].is_undefined_length = False
    out.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return out


def uncompressed_dicom(*, implicit: bool = False) -> bytes:
    return to_bytes(uncompressed(sample_dataset(), implicit=implicit))


def twelve_bit_pixels() -> np.ndarray:
    """The sample spread over 12 bits (as a CR detector stores it), with the low bits used."""
    arr = _mono2_pixels().astype(np.uint16) * 16
    rng = np.random.default_rng(4)
    return arr + rng.integers(0, 16, arr.shape, dtype=np.uint16)


def twelve_bit_dataset() -> Dataset:
    ds = uncompressed(sample_dataset(), twelve_bit_pixels())
    ds.BitsStored, ds.HighBit = 12, 11
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    return ds


def jpeg2000_dicom(*, twelve_bit: bool = True) -> bytes:
    ds = twelve_bit_dataset() if twelve_bit else uncompressed(sample_dataset())
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    return to_bytes(ds)


def rle_dicom(size: int = 256) -> bytes:
    small = np.asarray(Image.fromarray(_mono2_pixels()).resize((size, size)))
    ds = uncompressed(sample_dataset(), small)
    ds.Rows = ds.Columns = size
    ds.compress(RLELossless)
    return to_bytes(ds)


def jpeg_lossless_dicom() -> bytes:
    """12-bit data in JPEG Lossless SV1 (Process 14), encoded by encode_jpeg_lossless below."""
    ds = twelve_bit_dataset()
    frame = encode_jpeg_lossless(twelve_bit_pixels(), precision=12)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    return to_bytes(ds)


def inverted_monochrome1() -> bytes:
    """The MONOCHROME2 sample with its stored pixels inverted and labelled MONOCHROME1."""
    arr = _mono2_pixels()
    ds = uncompressed(sample_dataset(), (255 - arr).astype(np.uint8))
    ds.PhotometricInterpretation = "MONOCHROME1"
    return to_bytes(ds)


def png16_bytes() -> bytes:
    """A 16-bit grayscale PNG whose low byte carries information (12-bit detector data << 4)."""
    arr = (twelve_bit_pixels() << 4).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def dicom_from(
    pixels: np.ndarray,
    *,
    sop_class: str = CR_IMAGE_STORAGE,
    photometric: str = "MONOCHROME2",
    samples: int = 1,
    bits_stored: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attributes,
) -> Dataset:
    """A minimal, valid single-frame image dataset around pixels (HxW or HxWx3)."""
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(f"<u{bits // 8}").tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def small_gray(size: int = 128, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(size)
    return rng.integers(0, 200, (size, size), dtype=dtype)


def with_phi(ds: Dataset, markers: dict[str, str]) -> Dataset:
    """Plant PHI markers where real files carry identity: header, private tags, sequences."""
    out = copy.deepcopy(ds)
    out.PatientName = markers["name"]
    out.PatientID = markers["id"]
    out.PatientBirthDate = markers["birth_date"]
    out.InstitutionName = markers["institution"]
    out.InstitutionAddress = markers["address"]
    out.ReferringPhysicianName = markers["physician"]
    out.AccessionNumber = markers["accession"]
    out.StudyDescription = markers["description"]
    out.ImageComments = markers["comment"]
    out.OtherPatientIDs = markers["other_id"]
    out.StudyInstanceUID = markers["uid"]
    out.BurnedInAnnotation = "NO"
    # Free text where a view is often named (a free-text View Position is refused outright as not
    # a chest view: tests/jobs/test_eligibility.py).
    out.SeriesDescription = markers["view"]
    out.add_new(0x00091010, "LO", markers["private"])
    item = Dataset()
    item.PatientName = markers["name"]
    item.RequestedProcedureDescription = markers["description"]
    out.RequestAttributesSequence = Sequence([item])
    return out


def plant_jpeg_comment(frame: bytes, text: bytes) -> bytes:
    """A COM segment right after SOI: JPEG-in-DICOM streams can carry text of their own."""
    assert frame[:2] == b"\xff\xd8"
    return frame[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + frame[2:]


# --- a JPEG Lossless (Process 14, SV1) encoder, for tests only -----------------------------
# No installed package writes lossless JPEG; pylibjpeg-libjpeg decodes it. The
# stream is checked by decoding it back to the same array.


def encode_jpeg_lossless(arr: np.ndarray, precision: int) -> bytes:
    h, w = arr.shape
    x = arr.astype(np.int64)
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]  # predictor 1: the pixel to the left
    pred[1:, 0] = x[:-1, 0]  # first column: the pixel above
    pred[0, 0] = 1 << (precision - 1)
    diff = (x - pred).ravel() & 0xFFFF
    diff = np.where(diff >= 0x8000, diff - 0x10000, diff)
    mag = np.abs(diff)
    ssss = np.zeros_like(mag)
    nz = mag > 0
    ssss[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    extra_bits = np.where(ssss == 16, 0, ssss)
    extra = np.where(diff >= 0, diff, diff + (1 << extra_bits) - 1) & ((1 << extra_bits) - 1)
    code_len = 5  # every category 0..16 gets a 5-bit code equal to its number
    value = (ssss << extra_bits) | extra
    nbits = code_len + extra_bits
    start = np.concatenate(([0], np.cumsum(nbits)[:-1]))
    total = int(nbits.sum())
    bits = np.ones(((total + 7) // 8) * 8, dtype=np.uint8)  # padded with 1s
    for k in range(int(nbits.max())):
        sel = k < nbits
        bits[start[sel] + k] = (value[sel] >> (nbits[sel] - 1 - k)) & 1
    data = np.packbits(bits)
    ff = np.flatnonzero(data == 0xFF)
    data = np.insert(data, ff + 1, 0).tobytes()  # byte stuffing
    counts = [0] * 16
    counts[code_len - 1] = 17
    dht = bytes([0x00, *counts, *range(17)])
    sof = struct.pack(">BHHB", precision, h, w, 1) + bytes([1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])
    return (
        b"\xff\xd8"
        + b"\xff\xc3"
        + struct.pack(">H", len(sof) + 2)
        + sof
        + b"\xff\xc4"
        + struct.pack(">H", len(dht) + 2)
        + dht
        + b"\xff\xda"
        + struct.pack(">H", len(sos) + 2)
        + sos
        + data
        + b"\xff\xd9"
    )


ACCEPTED_GENERATED = {
    "uncompressed_explicit.dcm": lambda: uncompressed_dicom(),
    "uncompressed_implicit.dcm": lambda: uncompressed_dicom(implicit=True),
    "jpeg2000_12bit.dcm": lambda: jpeg2000_dicom(),
    "jpeg_lossless_12bit.dcm": jpeg_lossless_dicom,
    "rle_256.dcm": rle_dicom,
    "inverted_monochrome1.dcm": inverted_monochrome1,
    "png16.png": png16_bytes,
}


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def with_png_chunks(data: bytes, *chunks: bytes) -> bytes:
    """The PNG with these chunks inserted after IHDR."""
    return data[:33] + b"".join(chunks) + data[33:]  # after IHDR
