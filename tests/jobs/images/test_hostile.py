"""A corpus of hostile uploads, generated here: each gets a 4xx with a stable code and leaves nothing behind.

No row, no file, never a 500 (the test client re-raises any unhandled exception).
The list, with each file's status and code, is in docs/intake.md.
"""

from __future__ import annotations

import copy
import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from backend.jobs.models import Job
from tests.factories import png_bytes, post_image, sample_bytes
from tests.jobs.images import factories as f

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Hostile:
    name: str
    make: Callable[[], bytes]
    status: int
    code: str


def _pil(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((128, 128)).convert("RGB").save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_with_ihdr(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _png_ztxt_bomb() -> bytes:
    base = png_bytes()
    bomb = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (64 * 1024 * 1024), 9))
    return base[:33] + bomb + base[33:]


def _png_bad_crc() -> bytes:
    data = bytearray(png_bytes())
    data[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(data)


def _zip_of(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("evil.txt", b"payload " * 64)
        zf.writestr("image.png", data)
    return buf.getvalue()


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(sample_bytes("16747_3_1.jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _jpeg_dicom_polyglot() -> bytes:
    """A JPEG whose COM segment puts DICM at offset 128."""
    jpeg = sample_bytes("covid-19-pneumonia-58-prior.jpg")
    payload = b"A" * (128 - 6) + b"DICM" + b"B" * 32
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _png_dicom_polyglot() -> bytes:
    """A real DICOM whose 128-byte preamble is a PNG signature and header."""
    ds = f.read(f.uncompressed_dicom())
    preamble = (png_bytes()[:128]).ljust(128, b"\x00")
    ds.preamble = preamble
    return f.to_bytes(ds)


def _dicom(ds: Dataset) -> bytes:
    return f.to_bytes(ds)


def _cr(**kw) -> Dataset:
    return f.dicom_from(f.small_gray(), **kw)


def _sample() -> Dataset:
    return f.read(f.uncompressed_dicom())


def _without(keyword: str) -> bytes:
    ds = _sample()
    delattr(ds, keyword)
    return _dicom(ds)


def _with(**attrs) -> bytes:
    ds = _sample()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return _dicom(ds)


def _multiframe() -> bytes:
    ds = _cr()
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    return _dicom(ds)


def _rgb() -> bytes:
    rgb = np.stack([f.small_gray()] * 3, axis=-1)
    return _dicom(_cr_from(rgb, photometric="RGB", samples=3))


def _cr_from(pixels: np.ndarray, **kw) -> Dataset:
    return f.dicom_from(pixels, **kw)


def _ybr_jpeg() -> bytes:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    return _dicom(ds)


def _pydicom_file(name: str) -> Callable[[], bytes]:
    def make() -> bytes:
        path = pydicom.data.get_testdata_file(name)
        with open(path, "rb") as fh:
            return fh.read()

    return make


def _presentation_state() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "PR"
    ds.ContentLabel = "GSPS"
    return _dicom(ds)


def _geometry_bomb(rows: int, columns: int, frames: int | None = None) -> Callable[[], bytes]:
    def make() -> bytes:
        ds = _cr()
        ds.Rows, ds.Columns = rows, columns
        if frames:
            ds.NumberOfFrames = frames
        return _dicom(ds)

    return make


def _header_bomb() -> bytes:
    ds = _sample()
    ds.add_new(0x00111010, "OB", b"\x00" * (5 * 1024 * 1024))  # private, before the pixels
    return _dicom(ds)


def _nested_sequences(depth: int = 3000) -> bytes:
    """Undefined-length sequences nested thousands deep, by hand (pydicom would recurse writing them)."""
    head = f.to_bytes(_cr())
    pixel_at = head.index(b"\xe0\x7f\x10\x00")
    open_ = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    close = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return head[:pixel_at] + open_ * depth + close * depth + head[pixel_at:]


def _transfer_syntax(uid: str) -> Callable[[], bytes]:
    def make() -> bytes:
        data = f.uncompressed_dicom()
        if uid == DeflatedExplicitVRLittleEndian:
            return _deflate_bomb(f.read(data))
        return _raw_with_ts(data, uid)

    return make


def _ui_element(value: bytes) -> bytes:
    padded = value + b"\x00" * (len(value) % 2)
    return b"\x02\x00\x10\x00UI" + struct.pack("<H", len(padded)) + padded


def _raw_with_ts(data: bytes, uid: str) -> bytes:
    """Rewrite only the Transfer Syntax UID element of the file meta."""
    ds = f.read(data)
    old = str(ds.file_meta.TransferSyntaxUID).encode()
    old_el = _ui_element(old)
    new_el = _ui_element(uid.encode())
    assert old_el in data
    out = data.replace(old_el, new_el, 1)
    # fix the group length (0002,0000)
    at = out.index(b"\x02\x00\x00\x00UL\x04\x00")
    (length,) = struct.unpack("<I", out[at + 8 : at + 12])
    return out[: at + 8] + struct.pack("<I", length + len(new_el) - len(old_el)) + out[at + 12 :]


def _deflate_bomb(ds: Dataset) -> bytes:
    """File meta says Deflated; the body inflates to 64 MiB of zeros."""
    meta = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = body.compress(b"\x00" * (64 * 1024 * 1024)) + body.flush()
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + deflated


def _float_pixels() -> bytes:
    ds = _cr()
    del ds.PixelData
    ds.FloatPixelData = np.zeros((128, 128), dtype="<f4").tobytes()
    return _dicom(ds)


def _jpeg_frame_cut(fraction: float) -> bytes:
    data = sample_bytes(f.MONO2_SAMPLE)
    return data[: int(len(data) * fraction)]


def _jpeg_frame_corrupt() -> bytes:
    data = bytearray(sample_bytes(f.MONO2_SAMPLE))
    soi = data.index(b"\xff\xd8\xff", 900)
    data[soi + 2 : soi + 300] = b"\xff" * 298  # the frame's tables and frame header
    return bytes(data)


def _bits_overflow() -> bytes:
    """12-bit JPEG 2000 data that claims Bits Stored 8."""
    ds = f.read(f.jpeg2000_dicom())
    ds.BitsStored, ds.HighBit = 8, 7
    return _dicom(ds)


def _frame_bomb(source: Callable[[], bytes], marker: bytes, offset: int, fmt: str) -> Callable[[], bytes]:
    """A compressed frame whose own header declares 60000 x 60000 inside a DICOM that says 1024 x 1024."""

    def make() -> bytes:
        ds = f.read(source())
        [frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
        at = frame.index(marker) + offset
        frame = frame[:at] + struct.pack(fmt, 60_000, 60_000) + frame[at + struct.calcsize(fmt) :]
        ds.PixelData = encapsulate([frame])
        return _dicom(ds)

    return make


CORPUS: list[Hostile] = [
    # nothing recognisable
    Hostile("zero_bytes.png", lambda: b"", 400, "empty_file"),
    Hostile("one_byte.png", lambda: b"\x89", 415, "unsupported_media_type"),
    Hostile(
        "text_renamed.png", lambda: b"just some text, not an image\n" * 20, 415, "unsupported_media_type"
    ),
    Hostile(
        "text_renamed.dcm",
        lambda: b"PatientName: DOE^JOHN\nThis is not DICOM.\n" * 20,
        415,
        "unsupported_media_type",
    ),
    Hostile(
        "utf16_text.dcm",
        lambda: "\ufeffnot dicom either\n".encode("utf-16") * 20,
        415,
        "unsupported_media_type",
    ),
    Hostile("script.jpg", lambda: b"<html><script>alert(1)</script></html>", 415, "unsupported_media_type"),
    Hostile(
        "image.svg.png",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"/>',
        415,
        "unsupported_media_type",
    ),
    Hostile("document.pdf.dcm", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\n" * 10, 415, "unsupported_media_type"),
    Hostile("gif.png", lambda: _pil("GIF"), 415, "unsupported_media_type"),
    Hostile("bmp.png", lambda: _pil("BMP"), 415, "unsupported_media_type"),
    Hostile("tiff.dcm", lambda: _pil("TIFF"), 415, "unsupported_media_type"),
    Hostile("webp.jpg", lambda: _pil("WEBP"), 415, "unsupported_media_type"),
    Hostile("gzipped.png", lambda: gzip.compress(png_bytes()), 415, "unsupported_media_type"),
    Hostile("zipped.png", lambda: _zip_of(png_bytes()), 415, "unsupported_media_type"),
    # polyglots
    Hostile("png_then_zip.png", lambda: png_bytes() + _zip_of(b"x"), 400, "trailing_data"),
    Hostile(
        "jpeg_then_html.jpg",
        lambda: sample_bytes("16747_3_1.jpg") + b"<script>alert(1)</script>",
        400,
        "trailing_data",
    ),
    Hostile("jpeg_and_dicom.jpg", _jpeg_dicom_polyglot, 415, "ambiguous_format"),
    Hostile("png_preamble_dicom.dcm", _png_dicom_polyglot, 415, "ambiguous_format"),
    # PNG
    Hostile("png_magic_only.png", lambda: b"\x89PNG\r\n\x1a\n", 400, "invalid_image"),
    Hostile("png_truncated.png", lambda: sample_bytes("00000001_000.png")[:60_000], 400, "invalid_image"),
    Hostile("png_bad_crc.png", _png_bad_crc, 400, "invalid_image"),
    Hostile("png_pixel_bomb.png", lambda: _png_with_ihdr(100_000, 100_000), 413, "image_too_many_pixels"),
    Hostile("png_ztxt_bomb.png", _png_ztxt_bomb, 400, "invalid_image"),
    Hostile("png_too_small.png", lambda: png_bytes((32, 32)), 400, "image_too_small"),
    # JPEG
    Hostile("jpeg_magic_only.jpg", lambda: b"\xff\xd8\xff", 400, "invalid_image"),
    Hostile("jpeg_truncated.jpg", lambda: sample_bytes("16747_3_1.jpg")[:40_000], 400, "invalid_image"),
    Hostile("jpeg_pixel_bomb.jpg", lambda: _jpeg_with_size(60_000, 60_000), 413, "image_too_many_pixels"),
    Hostile("jpeg_too_small.jpg", lambda: _pil_small_jpeg(), 400, "image_too_small"),
    # DICOM: not readable
    Hostile("dicm_only.dcm", lambda: b"\x00" * 128 + b"DICM", 400, "invalid_image"),
    Hostile("dicom_header_truncated.dcm", lambda: f.uncompressed_dicom()[:700], 400, "invalid_image"),
    Hostile("dicom_pixels_truncated.dcm", lambda: f.uncompressed_dicom()[:600_000], 400, "invalid_image"),
    Hostile("dicom_jpeg_truncated.dcm", lambda: _jpeg_frame_cut(0.6), 400, "invalid_image"),
    Hostile("dicom_jpeg_corrupt.dcm", _jpeg_frame_corrupt, 400, "invalid_image"),
    Hostile("dicom_missing_rows.dcm", lambda: _without("Rows"), 400, "invalid_image"),
    Hostile("dicom_nested_sequences.dcm", _nested_sequences, 400, "invalid_image"),
    Hostile("dicom_header_bomb.dcm", _header_bomb, 413, "dicom_header_too_large"),
    Hostile(
        "dicom_j2k_frame_bomb.dcm",
        _frame_bomb(f.jpeg2000_dicom, b"\xff\x4f\xff\x51", 8, ">II"),  # SIZ: Xsiz, Ysiz
        400,
        "invalid_image",
    ),
    Hostile(
        "dicom_jpeg_frame_bomb.dcm",
        _frame_bomb(lambda: sample_bytes(f.MONO2_SAMPLE), b"\xff\xc0", 5, ">HH"),  # SOF0: Y, X
        400,
        "invalid_image",
    ),
    # DICOM: not an image we take
    Hostile("dicom_sr.dcm", _pydicom_file("test-SR.dcm"), 415, "dicom_unsupported_object"),
    Hostile("dicom_presentation_state.dcm", _presentation_state, 415, "dicom_unsupported_object"),
    Hostile("dicom_ct.dcm", _pydicom_file("CT_small.dcm"), 415, "dicom_unsupported_object"),
    Hostile("dicom_no_pixel_data.dcm", lambda: _without("PixelData"), 422, "dicom_no_pixel_data"),
    Hostile("dicom_multiframe.dcm", _multiframe, 422, "dicom_multiframe"),
    Hostile("dicom_rgb.dcm", _rgb, 422, "dicom_color"),
    Hostile("dicom_ybr_jpeg.dcm", _ybr_jpeg, 422, "dicom_color"),
    Hostile("dicom_palette.dcm", lambda: _dicom(_cr(photometric="PALETTE COLOR")), 422, "dicom_color"),
    Hostile("dicom_signed.dcm", lambda: _dicom(_cr(PixelRepresentation=1)), 422, "dicom_unsupported_pixels"),
    Hostile("dicom_float_pixels.dcm", _float_pixels, 422, "dicom_unsupported_pixels"),
    Hostile("dicom_bits_overflow.dcm", _bits_overflow, 422, "dicom_unsupported_pixels"),
    Hostile(
        "dicom_burned_in_text.dcm", lambda: _with(BurnedInAnnotation="YES"), 422, "dicom_burned_in_annotation"
    ),
    Hostile("dicom_pixel_bomb.dcm", _geometry_bomb(65_535, 65_535), 413, "image_too_many_pixels"),
    Hostile("dicom_frames_bomb.dcm", _geometry_bomb(512, 512, frames=100_000), 413, "image_too_many_pixels"),
    Hostile("dicom_too_small.dcm", lambda: _dicom(f.dicom_from(f.small_gray(32))), 400, "image_too_small"),
    Hostile(
        "dicom_deflate_bomb.dcm",
        _transfer_syntax(DeflatedExplicitVRLittleEndian),
        413,
        "dicom_inflated_too_large",
    ),
    Hostile(
        "dicom_htj2k.dcm",
        _transfer_syntax("1.2.840.10008.1.2.4.201"),
        415,
        "dicom_unsupported_transfer_syntax",
    ),
    Hostile(
        "dicom_made_up_syntax.dcm",
        _transfer_syntax("1.2.3.4.5.6.7"),
        415,
        "dicom_unsupported_transfer_syntax",
    ),
]


def _pil_small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((48, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 30
    assert len({h.name for h in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("hostile", CORPUS, ids=[h.name for h in CORPUS])
def test_hostile_upload_is_refused_and_leaves_nothing_behind(api, media_files, hostile):
    data = hostile.make()
    response = post_image(api, data, hostile.name)

    assert response.status_code == hostile.status, (response.status_code, response.content[:500])
    assert 400 <= response.status_code < 500
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == hostile.code
    assert body["error"]["message"]
    assert Job.objects.count() == 0
    assert media_files() == []


def test_file_over_the_size_limit_is_refused(api, media_files, settings):
    settings.UPLOAD_MAX_BYTES = 64 * 1024
    response = post_image(api, sample_bytes(f.MONO2_SAMPLE), "big.dcm")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert Job.objects.count() == 0 and media_files() == []


def test_burned_in_annotation_is_accepted_only_when_configured(api, settings):
    settings.DICOM_ACCEPT_BURNED_IN_ANNOTATION = True
    response = post_image(api, _with(BurnedInAnnotation="YES"), "burned.dcm")
    assert response.status_code == 202, response.content
    stored = Job.objects.get(id=response.json()["id"]).upload.read()
    assert pydicom.dcmread(io.BytesIO(stored)).BurnedInAnnotation == "YES"  # the warning travels with it


def test_a_rejected_dicom_does_not_echo_header_values(api):
    ds = copy.deepcopy(_cr(PixelRepresentation=1))
    ds.PatientName = "ECHO^MARKER^QX7"
    ds.SOPClassUID = "ECHO-MARKER-QX7"
    response = post_image(api, _dicom(ds), "x.dcm")
    assert 400 <= response.status_code < 500
    assert b"QX7" not in response.content


FUZZ_SEEDS = {
    "uncompressed.dcm": f.uncompressed_dicom,
    "jpeg_baseline.dcm": lambda: sample_bytes(f.MONO2_SAMPLE),
    "j2k.dcm": lambda: f.jpeg2000_dicom(),
    "gradient.png": png_bytes,
    "16747_3_1.jpg": lambda: sample_bytes("16747_3_1.jpg"),
}


@pytest.mark.parametrize("seed_name", list(FUZZ_SEEDS))
def test_mutated_files_never_cause_a_500(api, media_files, seed_name):
    """Cut and flipped copies of valid files: each is accepted or refused with a 4xx, never a 500."""
    seed = FUZZ_SEEDS[seed_name]()
    rng = np.random.default_rng(sum(seed_name.encode()))
    for i in range(12):
        data = bytearray(seed)
        if i % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            header = min(len(data), 2048)  # where the structure is
            for _ in range(int(rng.integers(1, 8))):
                at = int(rng.integers(0, header if i % 3 == 1 else len(data)))
                data[at] = int(rng.integers(0, 256))
        before = Job.objects.count()
        response = post_image(api, bytes(data), seed_name)
        assert response.status_code in (200, 202) or 400 <= response.status_code < 500, response.content
        if response.status_code >= 400:
            assert response.json()["error"]["code"]
            assert Job.objects.count() == before
        assert len(media_files()) == Job.objects.count()
