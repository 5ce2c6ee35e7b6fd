"""Which images are chest X-rays: the rules over Modality, Body Part Examined and View Position,
per client, through the API (a refusal is 422 not_chest_xray, no job, no file, never a score),
and the DICOM files intake now reads as pydicom does (no preamble, big endian, signed, deflated)."""

from __future__ import annotations

import copy
import io
import struct
import zlib

import numpy as np
import pydicom
import pytest
from django.core.exceptions import ValidationError
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian

from backend.jobs import eligibility, errors
from backend.jobs.eligibility import EligibilityRules, check_eligibility
from backend.jobs.models import Job
from tests.factories import assert_error, default_client, png_bytes, post_image
from tests.jobs.images import factories as f

pytestmark = pytest.mark.django_db

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def _sample(**attrs) -> Dataset:
    """The uncompressed MONOCHROME2 sample (a Secondary Capture saying CR, CHEST, PA), changed."""
    ds = f.read(f.uncompressed_dicom())
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _as(ds: Dataset, sop_class: str) -> Dataset:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    return ds


def _bytes(ds: Dataset) -> bytes:
    return f.to_bytes(ds)


def _set_rules(**override) -> None:
    client = default_client()
    client.eligibility = override
    client.full_clean()
    client.save(update_fields=["eligibility"])


def _refused(response, media_files, *, reason: str, attribute: str) -> dict:
    error = assert_error(response, 422, "not_chest_xray")
    assert error["details"]["reason"] == reason
    assert error["details"]["attribute"] == attribute
    assert Job.objects.count() == 0 and media_files() == []
    return error


# --- the four refusals tried as a hospital would ------------------------------------------------


def test_a_nuclear_medicine_secondary_capture_is_refused(api, media_files):
    path = get_testdata_file("JPGExtended.dcm")  # shipped with pydicom: works offline
    assert path is not None
    with open(path, "rb") as fh:
        data = fh.read()
    assert f.read(data).Modality == "NM" and f.read(data).SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    error = _refused(
        post_image(api, data, "nm.dcm"), media_files, reason="modality_not_accepted", attribute="Modality"
    )
    assert error["details"]["modality"] == "NM"
    assert error["details"]["sop_class"] == "Secondary Capture Image Storage"
    assert "NM" in error["message"]


@pytest.mark.parametrize("modality", ["CT", "MR", "MG"])
def test_a_secondary_capture_of_another_modality_is_refused(api, media_files, modality):
    data = _bytes(_sample(Modality=modality))  # Secondary Capture, body part CHEST, view PA
    error = _refused(
        post_image(api, data, "sc.dcm"), media_files, reason="modality_not_accepted", attribute="Modality"
    )
    assert error["details"]["modality"] == modality
    assert error["details"]["accepted"]["modalities"] == ["CR", "DX"]


def test_a_cr_of_a_hand_is_refused(api, media_files):
    data = _bytes(_as(_sample(BodyPartExamined="HAND"), f.CR_IMAGE_STORAGE))
    error = _refused(
        post_image(api, data, "hand.dcm"),
        media_files,
        reason="body_part_not_accepted",
        attribute="BodyPartExamined",
    )
    assert (error["details"]["modality"], error["details"]["body_part"]) == ("CR", "HAND")


def test_a_lateral_view_is_refused_by_default(api, media_files):
    data = _bytes(_as(_sample(Modality="DX", ViewPosition="LL"), DX_STORAGE))
    error = _refused(
        post_image(api, data, "ll.dcm"), media_files, reason="view_not_accepted", attribute="ViewPosition"
    )
    assert error["details"]["view"] == "LL"


def test_a_free_text_value_is_refused_and_never_quoted(api, media_files, caplog):
    data = _bytes(_sample(ViewPosition="QXPHI DOE JOHN"))
    response = post_image(api, data, "x.dcm")
    error = _refused(response, media_files, reason="view_not_accepted", attribute="ViewPosition")
    assert error["details"]["view"] == "other"
    assert b"QXPHI" not in response.content and "QXPHI" not in caplog.text


# --- what is accepted, and what every result reports ---------------------------------------------


@pytest.mark.parametrize(
    ("sop_class", "attrs", "reported"),
    [
        (f.CR_IMAGE_STORAGE, {}, ("CR", "CHEST", "PA")),
        (DX_STORAGE, {"Modality": "DX", "ViewPosition": "AP"}, ("DX", "CHEST", "AP")),
        (
            DX_STORAGE,
            {"Modality": " dx ", "BodyPartExamined": "thorax", "ViewPosition": None},
            ("DX", "CHEST", None),
        ),
        (DX_STORAGE, {"Modality": "DX", "BodyPartExamined": None, "ViewPosition": None}, ("DX", None, None)),
        ("1.2.840.10008.5.1.4.1.1.7", {"Modality": "OT", "BodyPartExamined": None}, ("OT", None, "PA")),
        ("1.2.840.10008.5.1.4.1.1.7", {"Modality": None}, (None, "CHEST", "PA")),
    ],
    ids=[
        "cr-chest-pa",
        "dx-chest-ap",
        "normalised-thorax",
        "dx-nothing-else",
        "ot-no-body-part",
        "no-modality",
    ],
)
def test_chest_radiographs_are_accepted_and_report_modality_body_part_and_view(
    api, worker, settings, sop_class, attrs, reported
):
    settings.BATCH_MAX_WAIT_MS = 0
    response = post_image(api, _bytes(_as(_sample(**attrs), sop_class)), "cxr.dcm")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["modality"], body["body_part"], body["view"]) == reported
    assert worker.drain() == 1
    done = api.get(body["url"]).json()
    assert done["status"] == "succeeded" and len(done["result"]["probabilities"]) == 18
    assert (done["modality"], done["body_part"], done["view"]) == reported
    stored = pydicom.dcmread(io.BytesIO(Job.objects.get(id=body["id"]).upload.read()))
    assert (stored.get("Modality"), stored.get("BodyPartExamined"), stored.get("ViewPosition")) == reported
    listed = api.get("/api/v1/jobs").json()["results"][0]
    assert (listed["modality"], listed["body_part"], listed["view"]) == reported


def test_png_and_jpeg_state_nothing_and_are_accepted_with_nulls(api):
    body = post_image(api, png_bytes(), "a.png").json()
    assert (body["modality"], body["body_part"], body["view"]) == (None, None, None)


# --- per client ----------------------------------------------------------------------------------


def test_a_client_that_allows_lateral_views_accepts_what_the_default_refuses(api, media_files):
    data = _bytes(_as(_sample(Modality="DX", ViewPosition="LL"), DX_STORAGE))
    assert post_image(api, data, "ll.dcm").status_code == 422
    _set_rules(views=["PA", "AP", "LL", "RL"])
    response = post_image(api, data, "ll.dcm")
    assert response.status_code == 202, response.content
    assert response.json()["view"] == "LL"
    assert len(media_files()) == 1


def test_a_client_that_requires_dicom_metadata_refuses_png(api, media_files):
    _set_rules(require=["modality"])
    _refused(
        post_image(api, png_bytes(), "a.png"), media_files, reason="modality_missing", attribute="Modality"
    )
    assert post_image(api, f.uncompressed_dicom(), "cr.dcm").status_code == 202


def test_a_client_can_require_a_chest_body_part_on_secondary_captures(api, media_files):
    data = _bytes(_sample(Modality="OT", BodyPartExamined=None))
    _set_rules(capture_requires_body_part=True)
    _refused(
        post_image(api, data, "ot.dcm"),
        media_files,
        reason="capture_without_body_part",
        attribute="BodyPartExamined",
    )
    assert post_image(api, _bytes(_sample(Modality="OT")), "ot-chest.dcm").status_code == 202


def test_a_cached_result_is_not_an_answer_once_the_rules_refuse_the_image(api, worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    data = f.uncompressed_dicom()  # CR
    first = post_image(api, data, "cr.dcm")
    assert first.status_code == 202 and worker.drain() == 1
    assert post_image(api, data, "cr.dcm").status_code == 200  # the cached result
    _set_rules(modalities=["DX"], capture_modalities=[])
    again = post_image(api, data, "cr.dcm")
    error = assert_error(again, 422, "not_chest_xray")
    assert error["details"]["modality"] == "CR"
    assert b"probabilities" not in again.content


def test_the_defaults_come_from_settings(api, media_files, settings):
    settings.ELIGIBLE_VIEWS = ["PA", "AP", "LATERAL"]
    data = _bytes(_as(_sample(Modality="DX", ViewPosition="LATERAL"), DX_STORAGE))
    assert post_image(api, data, "lat.dcm").status_code == 202


# --- the rules as a function --------------------------------------------------------------------

DEFAULTS = EligibilityRules.from_mapping(
    {
        "modalities": ["CR", "DX"],
        "capture_modalities": ["OT", "SC"],
        "capture_requires_body_part": False,
        "body_parts": ["CHEST"],
        "views": ["PA", "AP"],
        "require": [],
    }
)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        ({"modality": "NM", "body_part": "WHOLE BODY"}, "modality_not_accepted"),
        ({"modality": "US"}, "modality_not_accepted"),
        ({"modality": "CR", "body_part": "HAND"}, "body_part_not_accepted"),
        ({"modality": "SC", "body_part": "SKULL"}, "body_part_not_accepted"),
        ({"modality": "DX", "view": "RL"}, "view_not_accepted"),
        ({"modality": "CR\\DX"}, "modality_not_accepted"),
    ],
)
def test_ineligible_facts_raise_with_a_reason(facts, reason):
    with pytest.raises(errors.NotChestXray) as raised:
        check_eligibility(**facts, rules=DEFAULTS)
    assert raised.value.code == "not_chest_xray" and raised.value.status_code == 422
    assert raised.value.details["reason"] == reason


@pytest.mark.parametrize(
    ("facts", "normalised"),
    [
        ({}, (None, None, None)),
        ({"modality": "cr", "body_part": " Chest ", "view": "pa"}, ("CR", "CHEST", "PA")),
        ({"modality": "DX", "body_part": "THORAX"}, ("DX", "CHEST", None)),
        ({"modality": "OT", "body_part": "", "view": "  "}, ("OT", None, None)),
        ({"modality": "SC", "body_part": "CHEST", "view": "AP"}, ("SC", "CHEST", "AP")),
    ],
)
def test_eligible_facts_come_back_normalised(facts, normalised):
    got = check_eligibility(**facts, rules=DEFAULTS)
    assert (got.modality, got.body_part, got.view) == normalised


def test_an_override_replaces_only_what_it_names():
    rules = DEFAULTS.overridden({"views": ["pa", "ap", "ll"], "require": ["view"]})
    assert rules.views == {"PA", "AP", "LL"} and rules.require == {"view"}
    assert rules.modalities == DEFAULTS.modalities and rules.body_parts == DEFAULTS.body_parts
    with pytest.raises(errors.NotChestXray) as raised:
        check_eligibility(modality="CR", rules=rules)
    assert raised.value.details["reason"] == "view_missing"


@pytest.mark.parametrize(
    "override",
    [
        {"viewz": ["PA"]},
        {"views": "PA;AP;<script>"},
        {"views": [1, 2]},
        {"require": ["patient"]},
        {"capture_requires_body_part": "yes"},
        {"modalities": [], "capture_modalities": []},
        ["CR"],
    ],
)
def test_a_bad_override_is_a_validation_error(override):
    with pytest.raises(ValidationError):
        eligibility.validate_client_rules(override)


# --- what pydicom reads, intake now accepts -------------------------------------------------------


def _stored(job_id: str) -> Dataset:
    return pydicom.dcmread(io.BytesIO(Job.objects.get(id=job_id).upload.read()))


def _accepted_with_same_pixels(api, data: bytes, expected: np.ndarray) -> dict:
    response = post_image(api, data, "x.dcm")
    assert response.status_code == 202, response.content
    stored = _stored(response.json()["id"])
    assert stored.preamble is not None and stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.PixelRepresentation == 0
    np.testing.assert_array_equal(stored.pixel_array, expected)
    return response.json()


def _without_meta(data: bytes) -> bytes:
    (meta_length,) = struct.unpack("<I", data[140:144])  # (0002,0000) group length
    return data[144 + meta_length :]


@pytest.mark.parametrize(
    ("layout", "cut", "implicit"),
    [
        ("no_preamble", lambda d: d[132:], False),  # the file meta at offset 0
        ("bare_dataset", _without_meta, False),  # no file meta either
        ("bare_dataset", _without_meta, True),
        ("no_preamble", lambda d: d[128:], False),  # DICM at offset 0 (pydicom reads it not even forced)
    ],
    ids=["meta-at-0", "bare-explicit", "bare-implicit", "dicm-at-0"],
)
def test_files_without_the_preamble_are_accepted(api, layout, cut, implicit):
    data = f.uncompressed_dicom(implicit=implicit)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(io.BytesIO(cut(data)))  # only force=True reads these ...
    if layout == "bare_dataset":
        forced = pydicom.dcmread(io.BytesIO(cut(data)), force=True)
        assert forced.Rows == 1024 and not forced.file_meta  # it guesses the encoding
    body = _accepted_with_same_pixels(api, cut(data), f.read(data).pixel_array)  # ... and intake
    assert body["acquisition"]["file_layout"] == layout
    assert (body["modality"], body["body_part"], body["view"]) == ("CR", "CHEST", "PA")


def test_a_bare_dataset_of_the_wrong_kind_is_still_refused(api, media_files):
    data = _without_meta(_bytes(_sample(Modality="CT")))
    assert_error(post_image(api, data, "ct.dcm"), 422, "not_chest_xray")
    assert Job.objects.count() == 0 and media_files() == []


def test_explicit_vr_big_endian_is_accepted_and_stored_little_endian(api):
    ds = f.twelve_bit_dataset()
    pixels = ds.pixel_array.copy()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = pixels.astype(">u2").tobytes()
    data = _bytes(ds)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    np.testing.assert_array_equal(pydicom.dcmread(io.BytesIO(data)).pixel_array, pixels)
    body = _accepted_with_same_pixels(api, data, pixels)
    assert body["acquisition"]["transfer_syntax"] == "Explicit VR Big Endian"


def test_signed_pixels_with_non_negative_values_are_accepted(api):
    pixels = f.twelve_bit_pixels()[:256, :256] >> 1  # 11 bits of data in a signed 12-bit word
    ds = f.dicom_from(pixels, bits_stored=12, PixelRepresentation=1)
    assert pydicom.dcmread(io.BytesIO(_bytes(ds))).pixel_array.dtype == np.int16
    _accepted_with_same_pixels(api, _bytes(ds), pixels)


def test_signed_pixels_with_a_negative_value_are_refused(api, media_files):
    pixels = f.twelve_bit_pixels()[:256, :256].astype(np.int16) >> 1
    pixels[10, 10] = -3
    ds = f.dicom_from(pixels.astype(np.uint16), bits_stored=12, PixelRepresentation=1)
    ds.PixelData = pixels.astype("<i2").tobytes()
    assert pydicom.dcmread(io.BytesIO(_bytes(ds))).pixel_array.min() == -3
    error = assert_error(post_image(api, _bytes(ds), "neg.dcm"), 422, "dicom_unsupported_pixels")
    assert "negative" in error["message"]
    assert Job.objects.count() == 0 and media_files() == []


def _deflated(ds: Dataset) -> bytes:
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return _bytes(ds)


def test_a_deflated_file_is_inflated_with_a_bound_and_accepted(api):
    ds = f.read(f.uncompressed_dicom())
    data = _deflated(ds)
    assert len(data) < len(f.uncompressed_dicom()) and pydicom.dcmread(io.BytesIO(data)).pixel_array.shape
    body = _accepted_with_same_pixels(api, data, ds.pixel_array)
    assert body["acquisition"]["transfer_syntax"] == "Deflated Explicit VR Little Endian"


def test_a_deflated_file_that_inflates_past_the_upload_limit_is_refused(api, media_files, settings):
    gradient = np.tile(np.arange(1024, dtype=np.uint16), (1024, 1))  # 2 MiB that deflate to little
    data = _deflated(f.dicom_from(gradient, bits_stored=10))
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    assert len(data) < settings.UPLOAD_MAX_BYTES
    error = assert_error(post_image(api, data, "big.dcm"), 413, "dicom_inflated_too_large")
    assert error["details"] == {"max_inflated_bytes": 1024 * 1024}
    assert Job.objects.count() == 0 and media_files() == []


def test_a_corrupt_deflate_stream_is_invalid(api):
    data = _deflated(f.read(f.uncompressed_dicom()))
    meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    broken = data[:meta_end] + b"\xff" * 64 + data[meta_end + 64 :]
    with pytest.raises(zlib.error):
        zlib.decompress(broken[meta_end:], -zlib.MAX_WBITS)
    assert_error(post_image(api, broken, "broken.dcm"), 400, "invalid_image")


def test_the_web_page_shows_what_the_image_was_accepted_as(api, api_key, settings):
    from django.test import Client as Browser
    from django.urls import reverse

    settings.WEB_SIGN_IN_RATE = "0"
    job_id = post_image(api, f.uncompressed_dicom(), "cr.dcm").json()["id"]
    browser = Browser()
    assert browser.post("/sign-in", {"api_key": api_key}).status_code == 302
    page = browser.get(reverse("web:job", args=[job_id]))
    assert page.status_code == 200
    assert "CR chest PA" in page.content.decode()
