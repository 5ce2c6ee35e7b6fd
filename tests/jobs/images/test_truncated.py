"""Truncated images are refused on every path: each compressed DICOM transfer syntax, Deflated,
plain PNG and JPEG; over HTTP, over C-STORE, and in the worker's decode of a stored copy.

A compressed frame cut short inside a well-formed DICOM is the case that got through: libjpeg
decodes a JPEG or JPEG-LS scan that stops anywhere (the rows it lacks filled in) and reports
nothing. Each syntax's frame is cut to 50 %, 20 % and 5 % of its length, and once with only its
end marker removed; the intact file is accepted with the pixels pydicom decodes from it.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from backend.jobs import dicom
from backend.jobs.models import Job
from tests.factories import assert_error, post_image, sample_bytes
from tests.jobs.images import factories as f
from tests.jobs.images.truncation import (
    CUTS,
    SOURCES,
    cut_frame,
    deflated,
    frame_of,
    intact,
    png_with_cut_stream,
)
from worker.runtime.decode import DecodeError, decode

pytestmark = pytest.mark.django_db


# --- over HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", list(SOURCES), ids=[dicom.TRANSFER_SYNTAXES[s] for s in SOURCES])
def test_an_intact_compressed_dicom_is_accepted_with_its_pixels(api, syntax):
    data = intact(syntax)
    response = post_image(api, data, "intact.dcm")
    assert response.status_code == 202, response.content
    job = Job.objects.get(id=response.json()["id"])
    with job.upload.open("rb") as fh:
        stored = pydicom.dcmread(fh)
    # pydicom's default decoders (libjpeg for JPEG-LS) and the strict one intake now uses agree.
    np.testing.assert_array_equal(stored.pixel_array, f.read(data).pixel_array)


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("syntax", list(SOURCES), ids=[dicom.TRANSFER_SYNTAXES[s] for s in SOURCES])
def test_a_dicom_whose_frame_is_cut_is_refused(api, media_files, syntax, cut):
    data = cut_frame(intact(syntax), cut)
    pydicom.dcmread(io.BytesIO(data))  # the file itself is well formed
    error = assert_error(post_image(api, data, "cut.dcm"), 400, "invalid_image")
    assert error["details"]["format"] == "DICOM"
    assert Job.objects.count() == 0 and media_files() == []


@pytest.mark.parametrize(
    "syntax", [JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless]
)
def test_the_decoder_itself_refuses_a_cut_frame_given_its_end_marker_back(api, syntax):
    """Where a strict decoder exists (CharLS for JPEG-LS, openjpeg, pydicom's RLE) it is the one
    used: a frame cut in half and closed with a forged end marker is refused by decoding, not by
    the marker check. (libjpeg and Pillow's libjpeg-turbo fill such a JPEG scan in: not checked.)"""
    data = intact(syntax)
    ds = f.read(data)
    frame = frame_of(data)
    ds.PixelData = encapsulate([frame[: len(frame) // 2] + b"\xff\xd9"])
    assert_error(post_image(api, f.to_bytes(ds), "forged.dcm"), 400, "invalid_image")


@pytest.mark.parametrize("cut", [0.5, 0.2, 0.05, "last_byte", "last_2_bytes"])
def test_a_deflated_dicom_whose_stream_is_cut_is_refused(api, media_files, cut):
    """zlib hands back what a cut stream holds without an error: the last bytes of a deflate
    stream can hold nothing but its end, so the dataset read from them looked whole."""
    whole = deflated(None)
    assert post_image(api, whole, "whole.dcm").status_code == 202
    stored = media_files()
    data = {"last_byte": whole[:-1], "last_2_bytes": whole[:-2]}.get(cut) or deflated(cut)
    error = assert_error(post_image(api, data, "cut.dcm"), 400, "invalid_image")
    assert error["details"]["format"] == "DICOM"
    assert Job.objects.count() == 1 and media_files() == stored


def test_a_file_cut_inside_its_pixel_data_is_refused(api):
    for syntax in SOURCES:
        data = intact(syntax)
        for keep in (0.9, 0.99):
            cut = data[: int(len(data) * keep)]
            assert_error(post_image(api, cut, "cut.dcm"), 400, "invalid_image")


def test_the_frame_end_check(api):
    assert dicom.frame_is_complete(b"\xff\xd8 scan \xff\xd9")
    assert dicom.frame_is_complete(b"\xff\xd8 scan \xff\xd9\x00")  # padded to an even length
    assert dicom.frame_is_complete(b"\xff\xd8 scan \xff\xd9\xff")
    assert not dicom.frame_is_complete(b"\xff\xd8 scan \xff")
    assert not dicom.frame_is_complete(b"\xff\xd8 scan")
    assert set(dicom.DECODING_PLUGINS) == set(dicom.TRANSFER_SYNTAXES) - {
        s for s in dicom.TRANSFER_SYNTAXES if not pydicom.uid.UID(s).is_encapsulated
    }


# --- plain PNG and JPEG ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["00000001_000.png", "16747_3_1.jpg"])
@pytest.mark.parametrize("keep", [0.5, 0.2, 0.05, "end_marker_removed"])
def test_a_cut_png_or_jpeg_is_refused(api, media_files, name, keep):
    data = sample_bytes(name)
    if keep == "end_marker_removed":
        cut = data[:-12] if name.endswith(".png") else data.rstrip(b"\x00")[:-2]  # IEND / EOI
    else:
        cut = data[: int(len(data) * keep)]
    assert_error(post_image(api, cut, name), 400, "invalid_image")
    assert Job.objects.count() == 0 and media_files() == []


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.05, 0.999])
def test_a_png_whose_image_stream_is_cut_is_refused_even_if_a_library_allows_truncated_images(
    api, monkeypatch, fraction
):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    error = assert_error(post_image(api, png_with_cut_stream(fraction), "cut.png"), 400, "invalid_image")
    assert "truncated" in error["details"]["reason"]
    assert post_image(api, png_with_cut_stream(1.0), "whole.png").status_code == 202


# --- the worker's decode of a stored copy -----------------------------------------------------


@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, JPEGLSLossless])
def test_the_worker_refuses_a_stored_copy_whose_frame_is_cut(syntax):
    """Intake stores native pixels; a compressed copy that got there by other means is still read
    whole or not at all."""
    assert decode(intact(syntax))[0].shape == (1024, 1024)
    for cut in ("50%", "end_marker_removed"):
        with pytest.raises(DecodeError):
            decode(cut_frame(intact(syntax), cut))


def test_the_worker_refuses_a_stored_png_whose_stream_is_cut(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DecodeError):
        decode(png_with_cut_stream(0.5))
    assert (
        decode(png_with_cut_stream(1.0))[0].shape
        == Image.open(io.BytesIO(png_with_cut_stream(1.0))).size[::-1]
    )


def test_the_stored_copy_is_native(api):
    response = post_image(api, intact(JPEGLSNearLossless), "jls.dcm")
    with Job.objects.get(id=response.json()["id"]).upload.open("rb") as fh:
        assert pydicom.dcmread(fh).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
