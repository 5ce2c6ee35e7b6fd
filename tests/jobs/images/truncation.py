"""DICOM, PNG and JPEG files cut short, made from the samples at test time: every compressed
transfer syntax intake reads, its one frame cut to a fraction of its length or without its end
marker, inside an otherwise well-formed file."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from functools import cache

import pydicom
import pydicom.data
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from tests.factories import sample_bytes
from tests.jobs.images import factories as f

CUTS = {"50%": 0.5, "20%": 0.2, "5%": 0.05, "end_marker_removed": None}


def _relabelled(data: bytes, syntax: str) -> bytes:
    ds = f.read(data)
    ds.file_meta.TransferSyntaxUID = syntax
    return f.to_bytes(ds)


def _compressed(syntax: str, **kwargs) -> bytes:
    ds = f.uncompressed(f.sample_dataset())
    ds.compress(syntax, **kwargs)
    return f.to_bytes(ds)


def _jpeg_extended() -> bytes:
    """pydicom's 12-bit Process 4 sample (1024 x 256; a nuclear-medicine image, labelled a chest CR
    here, its stream untouched). Its frame is padded with 0xFF after the EOI marker."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("JPGExtended.dcm"))
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    return f.to_bytes(ds)


# Every compressed syntax intake reads. No installed package writes lossless JPEG with another
# predictor: a predictor-1 stream (factories.encode_jpeg_lossless) is a valid Process 14 one too.
SOURCES: dict[str, Callable[[], bytes]] = {
    JPEGBaseline8Bit: lambda: sample_bytes(f.MONO2_SAMPLE),
    JPEGExtended12Bit: _jpeg_extended,
    JPEGLossless: lambda: _relabelled(f.jpeg_lossless_dicom(), JPEGLossless),
    JPEGLosslessSV1: f.jpeg_lossless_dicom,
    JPEGLSLossless: lambda: _compressed(JPEGLSLossless, encoding_plugin="pyjpegls"),
    JPEGLSNearLossless: lambda: _compressed(JPEGLSNearLossless, encoding_plugin="pyjpegls", jls_error=2),
    JPEG2000Lossless: lambda: _compressed(JPEG2000Lossless, encoding_plugin="pylibjpeg"),
    JPEG2000: lambda: _compressed(JPEG2000, encoding_plugin="pylibjpeg", j2k_cr=[20]),
    RLELossless: lambda: _compressed(RLELossless),
}


@cache
def intact(syntax: str) -> bytes:
    data = SOURCES[syntax]()
    assert f.read(data).file_meta.TransferSyntaxUID == syntax
    return data


def frame_of(data: bytes) -> bytes:
    return next(generate_frames(f.read(data).PixelData, number_of_frames=1))


def cut_frame(data: bytes, cut: str) -> bytes:
    """The same well-formed DICOM, its one frame cut: a fraction of it kept, or its last two bytes
    (the end marker of a JPEG / JPEG-LS / JPEG 2000 frame) removed."""
    ds = f.read(data)
    frame = frame_of(data)
    if CUTS[cut] is None:
        if ds.file_meta.TransferSyntaxUID != RLELossless:
            frame = frame.rstrip(b"\x00\xff")  # the padding after the end marker
            assert frame.endswith(b"\xff\xd9")
        frame = frame[:-2]
    else:
        frame = frame[: int(len(frame) * CUTS[cut])]
    ds.PixelData = encapsulate([frame])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return f.to_bytes(ds)


def deflated(cut: float | None) -> bytes:
    """The uncompressed sample, Deflated; its deflate stream cut to a fraction of its length."""
    ds = f.read(f.uncompressed_dicom())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = f.to_bytes(ds)
    if cut is None:
        return data
    (meta_length,) = struct.unpack("<I", data[140:144])
    meta_end = 144 + meta_length
    return data[: meta_end + int((len(data) - meta_end) * cut)]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_cut_stream(fraction: float) -> bytes:
    """A structurally valid PNG (every chunk whole, CRCs right, IEND last) whose compressed image
    stream stops at a fraction of its length: only a decoder can tell."""
    data = sample_bytes("00000001_000.png")
    chunks = _png_chunks(data)
    stream = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    head = b"".join(_chunk(k, p) for k, p in chunks if k not in (b"IDAT", b"IEND"))
    return data[:8] + head + _chunk(b"IDAT", stream[: int(len(stream) * fraction)]) + _chunk(b"IEND", b"")
