"""The HTTP contract of /api/v1/jobs: upload, dedup, poll, list, errors."""

from __future__ import annotations

import io
import logging
import struct
import zlib

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from backend.jobs.models import Job, JobResult, JobStatus
from tests.factories import PNG_JPEG_SAMPLES, assert_error, png_bytes, post_image, sample_bytes

pytestmark = pytest.mark.django_db


def test_upload_returns_202_with_job_and_location(api):
    data = sample_bytes("00000001_000.png")
    response = post_image(api, data, "00000001_000.png")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["deduplicated"] is False
    assert body["image_format"] == "PNG"
    assert body["original_filename"] == ""  # file names can carry PHI: not stored by default
    job = Job.objects.get(id=body["id"])
    import hashlib

    from backend.jobs import images

    assert body["sha256"] == job.sha256 == hashlib.sha256(data).hexdigest()
    assert body["created_at"]
    assert body["url"].endswith(f"/api/v1/jobs/{job.id}")
    assert response["Location"] == body["url"]
    # Stored in file storage with the same pixels, metadata chunks (text, time) stripped.
    assert job.upload.read() == images.strip_png(data)


@pytest.mark.parametrize("name", PNG_JPEG_SAMPLES)
def test_every_png_and_jpeg_sample_is_accepted(api, name):
    response = post_image(api, sample_bytes(name), name)
    assert response.status_code == 202, response.content
    assert response.json()["image_format"] in ("PNG", "JPEG")


def test_get_job_and_unknown_ids(api):
    job_id = post_image(api, png_bytes()).json()["id"]
    response = api.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["id"] == job_id
    assert response.json()["result"] is None

    assert_error(api.get("/api/v1/jobs/7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11"), 404, "job_not_found")
    assert_error(api.get("/api/v1/jobs/not-a-uuid"), 404, "job_not_found")
    assert_error(api.get("/api/v1/nothing-here"), 404, "not_found")


@pytest.mark.parametrize("wait", ["¹", "٣", "-1", "1.5", "x", "999999"])
def test_a_wait_that_is_not_a_whole_number_of_seconds_is_a_400(api, wait):
    # '¹' and '٣' pass str.isdigit() but not int(): schemathesis found the 500 they caused.
    job_id = post_image(api, png_bytes()).json()["id"]
    assert_error(api.get(f"/api/v1/jobs/{job_id}", {"wait": wait}), 400, "invalid_wait")


def test_succeeded_job_carries_result_and_dedup_returns_it_at_once(
    api, worker, django_assert_max_num_queries
):
    data = sample_bytes("00000001_000.png")
    first = post_image(api, data).json()
    worker.drain()

    polled = api.get(f"/api/v1/jobs/{first['id']}").json()
    assert polled["status"] == "succeeded"
    result = polled["result"]
    assert len(result["probabilities"]) == 18
    assert all(0.0 <= p <= 1.0 for p in result["probabilities"].values())
    assert result["provenance"]["weights"] == "untrained"
    assert result["provenance"]["model"] == "densenet121-res224-all"
    assert result["provenance"]["preprocessing"]
    assert (
        result["provenance"]["precision"] and result["provenance"]["model_version"] == first["model_version"]
    )
    for phase in ("preprocess_ms", "inference_ms", "postprocess_ms", "batch_size"):
        assert phase in result["timings"]

    # A cache hit is answered without decoding or inference: a few queries, no new job.
    with django_assert_max_num_queries(3):
        again = post_image(api, data, "renamed.png")
    assert again.status_code == 200
    body = again.json()
    assert body["id"] == first["id"]
    assert body["deduplicated"] is True
    assert body["result"]["probabilities"] == result["probabilities"]
    assert Job.objects.count() == 1 and JobResult.objects.count() == 1


def test_dedup_while_queued_returns_202_same_job(api, media_files):
    data = png_bytes(seed=7)
    first = post_image(api, data).json()
    again = post_image(api, data)
    assert again.status_code == 202
    assert again.json()["id"] == first["id"]
    assert again.json()["deduplicated"] is True
    assert Job.objects.count() == 1
    assert len(media_files()) == 1  # the duplicate stored nothing


def test_failed_job_is_retried_as_a_new_attempt(api, worker):
    data = png_bytes(seed=11)
    first = post_image(api, data).json()
    job = Job.objects.get(id=first["id"])
    with job.upload.storage.open(job.upload.name, "wb") as fh:  # corrupt it on disk
        fh.write(b"not an image any more")
    worker.drain()
    failed = api.get(f"/api/v1/jobs/{first['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "decode_failed"

    retry = post_image(api, data)
    assert retry.status_code == 202
    assert retry.json()["id"] != first["id"]
    assert retry.json()["deduplicated"] is False
    worker.drain()
    assert api.get(retry.json()["url"]).json()["status"] == "succeeded"
    assert Job.objects.filter(sha256=failed["sha256"]).count() == 2


def test_list_is_paginated_newest_first_and_filterable(api, worker):
    ids = [post_image(api, png_bytes(seed=i)).json()["id"] for i in range(5)]
    worker.drain()
    newer = post_image(api, png_bytes(seed=99)).json()["id"]

    page = api.get("/api/v1/jobs", {"page_size": 4}).json()
    assert page["count"] == 6
    assert [j["id"] for j in page["results"]] == [newer, *ids[::-1][:3]]
    assert page["next"]
    second = api.get(page["next"]).json()
    assert [j["id"] for j in second["results"]] == ids[::-1][3:]

    queued = api.get("/api/v1/jobs", {"status": "queued"}).json()
    assert [j["id"] for j in queued["results"]] == [newer]
    succeeded = api.get("/api/v1/jobs", {"status": "SUCCEEDED"}).json()
    assert {j["id"] for j in succeeded["results"]} == set(ids)
    assert_error(api.get("/api/v1/jobs", {"status": "done"}), 400, "invalid_filter")


# --- bad input: a clear 4xx, one error shape, nothing left behind -------------------


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height with a tiny, incomplete body."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _truncated_png() -> bytes:
    data = sample_bytes("00000001_000.png")
    return data[: len(data) // 2]


def _truncated_jpeg() -> bytes:
    data = sample_bytes("16747_3_1.jpg")
    return data[: len(data) // 3]


BAD_UPLOADS = [
    ("empty", b"", 400, "empty_file"),
    ("text", b"hello, I am not an X-ray\n" * 10, 415, "unsupported_media_type"),
    ("gif", b"GIF89a" + b"\0" * 100, 415, "unsupported_media_type"),
    ("pdf renamed .png", b"%PDF-1.4\n" + b"0" * 200, 415, "unsupported_media_type"),
    ("png magic only", b"\x89PNG\r\n\x1a\n" + b"\0" * 50, 400, "invalid_image"),
    ("truncated png", None, 400, "invalid_image"),
    ("truncated jpeg", None, 400, "invalid_image"),
    ("header bomb 100k x 100k", _png_with_header(100_000, 100_000), 413, "image_too_many_pixels"),
    ("too small", png_bytes(size=(32, 32)), 400, "image_too_small"),
]


@pytest.mark.parametrize(("label", "data", "status", "code"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_are_refused_and_leave_nothing(api, media_files, label, data, status, code):
    if data is None:
        data = _truncated_png() if "png" in label else _truncated_jpeg()
    assert_error(post_image(api, data, "upload.png"), status, code)
    assert Job.objects.count() == 0
    assert media_files() == []


def test_missing_image_field(api, media_files):
    assert_error(api.post("/api/v1/jobs", {"file": "x"}, format="multipart"), 400, "missing_image")
    assert_error(api.post("/api/v1/jobs", {}, format="json"), 400, "missing_image")
    assert Job.objects.count() == 0 and media_files() == []


def test_file_over_size_limit_is_413(api, settings, media_files):
    settings.UPLOAD_MAX_BYTES = 100_000
    error = assert_error(post_image(api, sample_bytes("00000001_000.png")), 413, "file_too_large")
    assert error["details"]["max_bytes"] == 100_000
    assert Job.objects.count() == 0 and media_files() == []


def test_pixel_limit_is_a_setting(api, settings, media_files):
    settings.IMAGE_MAX_PIXELS = 100_000
    assert_error(post_image(api, sample_bytes("00000001_000.png")), 413, "image_too_many_pixels")
    # A real decompression bomb: tiny file, huge raster, refused before decoding.
    buf = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(buf, format="PNG")
    settings.IMAGE_MAX_PIXELS = 50_000_000
    assert len(buf.getvalue()) < 300_000
    assert_error(post_image(api, buf.getvalue()), 413, "image_too_many_pixels")
    assert Job.objects.count() == 0 and media_files() == []


def test_wrong_method_and_parse_errors_use_the_error_shape(api):
    assert_error(api.delete("/api/v1/jobs"), 405, "method_not_allowed")
    response = api.generic("POST", "/api/v1/jobs", "{not json", content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_queued_job_is_visible_as_queued_until_a_worker_runs(api):
    body = post_image(api, png_bytes(seed=3)).json()
    assert Job.objects.get(id=body["id"]).status == JobStatus.QUEUED


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "12 34", "\u0661\u0662"])
def test_a_bad_content_length_is_a_400_in_the_error_shape(api, value, media_files):
    response = api.post(
        "/api/v1/jobs",
        {"image": SimpleUploadedFile("x.png", png_bytes())},
        format="multipart",
        CONTENT_LENGTH=value,
    )
    assert_error(response, 400, "invalid_content_length")
    assert not Job.objects.exists() and media_files() == []


def test_a_refused_upload_logs_one_line_with_its_code_and_no_traceback(api, caplog):
    """pydicom cannot decode this JPEG-lossy DICOM (each plugin fails): a 400, logged once."""
    from pydicom.data import get_testdata_file

    caplog.set_level(logging.DEBUG)
    data = open(get_testdata_file("JPEG-lossy.dcm"), "rb").read()  # noqa: SIM115 - read once
    assert_error(post_image(api, data, "x.dcm"), 400, "invalid_image")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
    refused = [r.getMessage() for r in caplog.records if "event=request_refused" in r.getMessage()]
    assert refused == ["event=request_refused status=400 code=invalid_image"]


def test_two_images_in_one_upload_are_refused_not_one_silently_used(api):
    response = api.post(
        "/api/v1/jobs",
        {
            "image": [
                SimpleUploadedFile("a.png", png_bytes(seed=1)),
                SimpleUploadedFile("b.png", png_bytes(seed=2)),
            ]
        },
        format="multipart",
    )
    assert_error(response, 400, "multiple_images")
    assert Job.objects.count() == 0


def test_django_request_limits_are_4xx_in_the_error_shape(api):
    assert_error(api.get("/api/v1/jobs?" + "&".join(f"p{i}=1" for i in range(1001))), 400, "too_many_fields")
    # A batch may carry BATCH_MAX_IMAGES files; Django refuses a request with more parts than that.
    files = {
        f"f{i}": SimpleUploadedFile(f"{i}.png", b"x")
        for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)
    }
    assert_error(api.post("/api/v1/jobs", files, format="multipart"), 400, "too_many_files")
