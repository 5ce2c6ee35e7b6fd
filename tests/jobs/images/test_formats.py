"""Accepted formats through the HTTP API and the worker's decoder: what is stored, what the model gets."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from pydicom.pixels import get_decoder

from backend.jobs import dicom, images
from backend.jobs.model_identity import current_model_version
from backend.jobs.models import Job
from tests.factories import PNG_JPEG_SAMPLES, post_image, sample_bytes
from tests.jobs.images import factories as f
from worker.runtime.decode import decode
from worker.runtime.preprocess import normalize

pytestmark = pytest.mark.django_db

ALL_ACCEPTED = [*PNG_JPEG_SAMPLES, *f.DICOM_SAMPLES, *f.ACCEPTED_GENERATED]


def upload_bytes(name: str) -> bytes:
    return f.ACCEPTED_GENERATED[name]() if name in f.ACCEPTED_GENERATED else sample_bytes(name)


@pytest.mark.parametrize("name", ALL_ACCEPTED)
def test_each_accepted_file_is_stored_so_the_worker_sees_the_same_pixels(api, media_files, name):
    data = upload_bytes(name)
    response = post_image(api, data, name)
    assert response.status_code == 202, response.content
    job = Job.objects.get(id=response.json()["id"])
    assert job.sha256 == images.sha256_of(data)  # dedup key: the bytes as uploaded
    assert job.size_bytes == len(data)
    [stored_path] = media_files()
    assert stored_path.suffix == "." + images.EXTENSIONS[job.image_format]
    stored = stored_path.read_bytes()

    original, original_max = decode(data)
    kept, kept_max = decode(stored)
    assert original_max == kept_max
    np.testing.assert_array_equal(original, kept)


def test_format_is_detected_from_content_not_from_name_or_content_type(api):
    data = SimpleUploadedFile("chest.png", sample_bytes(f.MONO2_SAMPLE), content_type="image/png")
    response = api.post("/api/v1/jobs", {"image": data}, format="multipart")
    assert response.status_code == 202, response.content
    assert response.json()["image_format"] == "DICOM"
    assert response.json()["url"]


def test_dicom_acquisition_facts_are_returned(api):
    body = post_image(api, sample_bytes(f.MONO2_SAMPLE), "x.dcm").json()
    assert body["image_format"] == "DICOM"
    acq = body["acquisition"]
    assert acq["modality"] == "CR"
    assert acq["view_position"] == "PA"
    assert acq["pixel_spacing_mm"] == [0.168, 0.168]
    assert acq["photometric_interpretation"] == "MONOCHROME2"
    assert acq["bits_stored"] == 8
    assert acq["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert acq["lossy_compression"] is True


def test_png_and_jpeg_have_no_acquisition_facts(api):
    assert post_image(api, sample_bytes("00000001_000.png")).json()["acquisition"] == {}


# --- DICOM: what is stored -------------------------------------------------------------


def test_stored_dicom_is_a_new_file_with_only_allowlisted_attributes():
    data = sample_bytes(f.MONO2_SAMPLE)
    accepted = images.accept_image(data, max_pixels=50_000_000, min_side=64, dicom_max_header_bytes=1 << 22)
    ds = pydicom.dcmread(io.BytesIO(accepted.stored_bytes))
    original = f.read(data)
    keywords = {e.keyword for e in ds}
    assert keywords <= {
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "Modality",
        "ViewPosition",
        "BodyPartExamined",
        "PixelSpacing",
        "ImagerPixelSpacing",
        "BurnedInAnnotation",
        "LossyImageCompression",
        "LossyImageCompressionMethod",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "VOILUTSequence",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
    }
    assert "PatientName" not in ds and "PatientID" not in ds and "StudyDate" not in ds
    for uid in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert ds[uid].value != original[uid].value
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.LossyImageCompression == "01"  # it was JPEG baseline: the copy says so
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)


def test_every_accepted_transfer_syntax_has_an_installed_decoder():
    for uid in dicom.TRANSFER_SYNTAXES:
        assert get_decoder(uid).is_available, uid
    assert pydicom.uid.DeflatedExplicitVRLittleEndian not in dicom.TRANSFER_SYNTAXES


# --- MONOCHROME1 -------------------------------------------------------------------------


def test_fake_monochrome1_is_the_negative_of_the_monochrome2_sample():
    """torchxrayvision's tests/test_dicom_reader.py, through our decoder."""
    mono2 = normalize(*decode(sample_bytes(f.MONO2_SAMPLE)))
    mono1 = normalize(*decode(sample_bytes(f.MONO1_SAMPLE)))
    assert mono2[60][2] == pytest.approx(-959.75, abs=1e-3)
    assert mono1[60][2] == pytest.approx(959.75, abs=1e-3)
    np.testing.assert_allclose(mono1, -mono2, atol=1e-3)


def test_monochrome1_with_inverted_pixels_decodes_to_the_monochrome2_image():
    mono2, max2 = decode(sample_bytes(f.MONO2_SAMPLE))
    inverted, max1 = decode(f.inverted_monochrome1())
    assert max1 == max2 == 255
    np.testing.assert_array_equal(inverted, mono2)


def test_decoder_matches_torchxrayvision_read_xray_dcm(tmp_path):
    import torchxrayvision as xrv

    for name, data in [
        (f.MONO2_SAMPLE, sample_bytes(f.MONO2_SAMPLE)),
        (f.MONO1_SAMPLE, sample_bytes(f.MONO1_SAMPLE)),
        ("j2k.dcm", f.jpeg2000_dicom()),
        ("lossless.dcm", f.jpeg_lossless_dicom()),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read_xray_dcm warns when it inverts MONOCHROME1
            reference = xrv.utils.read_xray_dcm(str(path))
        np.testing.assert_array_equal(normalize(*decode(data)), reference)


# --- VOI LUT setting ---------------------------------------------------------------------


def _windowed_dicom() -> bytes:
    ds = f.twelve_bit_dataset()
    ds.WindowCenter = "1500"
    ds.WindowWidth = "2000"
    return f.to_bytes(ds)


def test_voi_lut_is_off_by_default_and_on_matches_read_xray_dcm_voi_lut(tmp_path, settings):
    import torchxrayvision as xrv

    data = _windowed_dicom()
    path = tmp_path / "windowed.dcm"
    path.write_bytes(data)
    default = normalize(*decode(data))
    np.testing.assert_array_equal(default, xrv.utils.read_xray_dcm(str(path)))

    settings.DICOM_APPLY_VOI_LUT = True
    windowed = normalize(*decode(data))
    np.testing.assert_allclose(windowed, xrv.utils.read_xray_dcm(str(path), voi_lut=True), atol=1e-3)
    assert np.abs(windowed - default).max() > 100  # it does change what the model sees

    # ... and the stored (de-identified) copy keeps the window, so the setting works on it.
    stored = images.accept_image(
        data, max_pixels=50_000_000, min_side=64, dicom_max_header_bytes=1 << 22
    ).stored_bytes
    np.testing.assert_array_equal(normalize(*decode(stored)), windowed)


def test_voi_lut_setting_is_part_of_the_model_version(settings):
    off = current_model_version()
    settings.DICOM_APPLY_VOI_LUT = True
    on = current_model_version()
    assert on != off and on.endswith("+voilut")


# --- PNG / JPEG ---------------------------------------------------------------------------


def test_16_bit_png_keeps_its_dynamic_range():
    data = f.png16_bytes()
    arr, maxval = decode(data)
    assert arr.dtype == np.uint16 and maxval == 65535
    assert len(np.unique(arr)) > 1024  # not squeezed into 8 bits
    expected = (2 * ((f.twelve_bit_pixels() << 4).astype(np.float32) / 65535) - 1) * 1024
    np.testing.assert_allclose(normalize(arr, maxval), expected, atol=1e-3)


def test_png_text_exif_and_private_chunks_are_not_stored():
    base = sample_bytes("00000001_000.png")
    data = f.with_png_chunks(
        base,
        f.png_chunk(b"tEXt", b"Patient\x00DOE^JANE-PNG"),
        f.png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"MRN-PNG-1234")),
        f.png_chunk(b"iTXt", b"Author\x00\x00\x00\x00\x00Dr PNG-WHO"),
        f.png_chunk(b"eXIf", b"MM\x00*PNG-EXIF-SECRET"),
        f.png_chunk(b"prVt", b"PNG-PRIVATE-SECRET"),
    )
    stored = images.strip_png(data)
    for secret in (
        b"DOE^JANE-PNG",
        b"MRN-PNG-1234",
        b"PNG-WHO",
        b"PNG-EXIF-SECRET",
        b"PNG-PRIVATE",
        b"date:",
    ):
        assert secret not in stored
    np.testing.assert_array_equal(decode(stored)[0], decode(base)[0])


def test_jpeg_comments_and_app_segments_are_not_stored():
    base = sample_bytes("16747_3_1.jpg")
    assert b"\xff\xfe" in base[:200]  # the sample itself has a COM segment
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 24) + b"Exif\x00\x00JPEG-EXIF-SECRET!!"
    data = base[:2] + exif + base[2:]
    stored = images.strip_jpeg(data)
    assert b"JPEG-EXIF-SECRET" not in stored
    assert b"\xff\xfe" not in stored.split(b"\xff\xda", 1)[0]
    np.testing.assert_array_equal(decode(stored)[0], decode(base)[0])


def test_progressive_jpeg_is_walked_to_the_end():
    img = Image.open(io.BytesIO(sample_bytes("16747_3_1.jpg")))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", progressive=True, quality=90, comment=b"PROGRESSIVE-SECRET")
    data = buf.getvalue()
    stored = images.strip_jpeg(data)
    assert b"PROGRESSIVE-SECRET" not in stored
    np.testing.assert_array_equal(decode(stored)[0], decode(data)[0])


@pytest.mark.parametrize("name", PNG_JPEG_SAMPLES)
def test_metadata_stripping_never_changes_pixels(name):
    data = sample_bytes(name)
    stored = images.strip_png(data) if data.startswith(b"\x89PNG") else images.strip_jpeg(data)
    np.testing.assert_array_equal(decode(stored)[0], decode(data)[0])


def test_original_filename_is_not_stored_unless_configured(api, settings):
    body = post_image(api, f.uncompressed_dicom(), "DOE_JOHN_1960-01-01.dcm").json()
    assert body["original_filename"] == ""
    assert Job.objects.get(id=body["id"]).original_filename == ""
    settings.STORE_ORIGINAL_FILENAME = True
    body = post_image(api, sample_bytes("h0001.png"), "h0001.png").json()
    assert body["original_filename"] == "h0001.png"


def test_content_type_is_kept_only_as_a_bare_mime_type():
    assert images.stored_content_type("image/png; name=DOE^JOHN") == "image/png"
    assert images.stored_content_type("DOE JOHN") == ""
    assert images.stored_content_type("application/dicom") == "application/dicom"


def _pydicom_test_file(name: str) -> bytes:
    with open(pydicom.data.get_testdata_file(name), "rb") as fh:
        return fh.read()


def test_jpeg_extended_12_bit_dicom_is_accepted(api, media_files):
    # 1024 x 256, 12-bit, JPEG Process 2 & 4. It is a nuclear-medicine image (Modality NM, which
    # tests/jobs/test_eligibility.py sees refused): labelled a chest CR here, the stream untouched.
    ds = f.read(_pydicom_test_file("JPGExtended.dcm"))
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    data = f.to_bytes(ds)
    response = post_image(api, data, "extended.dcm")
    assert response.status_code == 202, response.content
    assert response.json()["acquisition"]["transfer_syntax"] == "JPEG Extended (Process 2 and 4)"
    [stored] = media_files()
    np.testing.assert_array_equal(decode(stored.read_bytes())[0], f.read(data).pixel_array)


@pytest.mark.parametrize("name", ["JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm"])
def test_jpeg_ls_dicom_decodes_to_pydicom_pixels(name):
    """pydicom's JPEG-LS samples are 10 px wide: checked below the API's minimum side."""
    data = _pydicom_test_file(name)
    image = dicom.accept_dicom(
        data, max_pixels=50_000_000, min_side=1, max_header_bytes=1 << 22, accept_burned_in=False
    )
    np.testing.assert_array_equal(decode(image.stored_bytes)[0], f.read(data).pixel_array)
