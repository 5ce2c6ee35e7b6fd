"""The jobs API's edges: a batch's images against the upload rate, `image` with `images`, malformed
paging, and If-None-Match as RFC 9110 compares it."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.jobs.models import Job
from tests.factories import assert_error, client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db


def _post_batch(api, n: int, start: int = 0):
    form = {"images": [SimpleUploadedFile(f"{i}.png", png_bytes(seed=i)) for i in range(start, start + n)]}
    return api.post("/api/v1/batches", form, format="multipart")


def _limit_uploads(rate: str) -> None:
    client, _ = client_and_key()
    client.upload_rate = rate
    client.save()


# --- a batch costs one per image ------------------------------------------------------------


def test_a_batch_larger_than_the_whole_rate_is_refused_not_charged_as_the_burst(api, settings):
    """upload_rate 10/min: a 64-image batch used to pass for the price of 10 images."""
    settings.BATCH_MAX_IMAGES = 100
    _limit_uploads("10/min")
    error = assert_error(_post_batch(api, 64), 400, "too_many_images")
    assert error["details"] == {"images": 64, "max_images": 10, "rate": "10/min"}
    assert Job.objects.count() == 0
    # Nothing was charged for it: the whole rate is still there, exactly once.
    assert _post_batch(api, 10).status_code == 201
    assert Job.objects.count() == 10
    refused = post_image(api, png_bytes(seed=99))
    assert_error(refused, 429, "rate_limited")


def test_a_batch_that_does_not_fit_now_is_refused_whole_with_retry_after(api):
    _limit_uploads("10/min")
    assert _post_batch(api, 7).status_code == 201
    refused = _post_batch(api, 4, start=7)  # 11 > 10: none of it
    assert_error(refused, 429, "rate_limited")
    # Until one interval (6 s) has passed: 7 + 4 - 10 = 1 image's room.
    assert 1 <= int(refused["Retry-After"]) <= 6
    assert Job.objects.count() == 7
    assert _post_batch(api, 3, start=7).status_code == 201  # what fits still goes through
    assert Job.objects.count() == 10


# --- one image or a batch -------------------------------------------------------------------


def test_image_and_images_together_are_refused_not_half_taken(api):
    form = {
        "image": SimpleUploadedFile("a.png", png_bytes(seed=1)),
        "images": [
            SimpleUploadedFile("b.png", png_bytes(seed=2)),
            SimpleUploadedFile("c.png", png_bytes(seed=3)),
        ],
    }
    error = assert_error(api.post("/api/v1/jobs", form, format="multipart"), 400, "ambiguous_upload")
    assert error["details"] == {"images": 2}
    assert Job.objects.count() == 0


# --- paging ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"page": "abc"},
        {"page": "0"},
        {"page": "-1"},
        {"page": "1.5"},
        {"page": "²"},
        {"page_size": "abc"},
        {"page_size": "0"},
        {"page_size": "-5"},
        {"page_size": "501"},
        {"page_size": ""},
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/dicom/unscored"])
def test_a_malformed_page_or_page_size_is_400_invalid_page(api, query, path):
    """On every paged endpoint (each uses JobPagination)."""
    assert_error(api.get(path, query), 400, "invalid_page")


def test_well_formed_pages_still_page(api):
    for seed in range(3):
        assert post_image(api, png_bytes(seed=seed)).status_code == 202
    first = api.get("/api/v1/jobs", {"page_size": "2"}).json()
    second = api.get("/api/v1/jobs", {"page_size": "2", "page": "2"}).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 1
    assert first["next"] and second["previous"]
    assert api.get("/api/v1/jobs", {"page_size": "500"}).status_code == 200
    assert api.get("/api/v1/jobs", {"page": "last", "page_size": "2"}).json()["results"] == second["results"]
    past_the_end = api.get("/api/v1/jobs", {"page_size": "2", "page": "3"})
    assert past_the_end.status_code == 404  # well-formed: that page does not exist


# --- If-None-Match --------------------------------------------------------------------------


@pytest.fixture
def job_url_and_etag(api) -> tuple[str, str]:
    body = post_image(api, png_bytes(seed=5)).json()
    response = api.get(body["url"])
    assert response.status_code == 200
    etag = response["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    return body["url"], etag


@pytest.mark.parametrize(
    "header",
    [
        "{etag}",
        "W/{etag}",
        "*",
        ' "other", W/{etag} ',
        '"a,b", {etag}',
    ],
)
def test_if_none_match_matches_weakly_and_star(api, job_url_and_etag, header):
    url, etag = job_url_and_etag
    response = api.get(url, HTTP_IF_NONE_MATCH=header.format(etag=etag))
    assert response.status_code == 304, header
    assert response["ETag"] == etag


@pytest.mark.parametrize("header", ['"other"', 'W/"other"', "{bare}", "garbage, more"])
def test_if_none_match_that_does_not_match_gets_the_job(api, job_url_and_etag, header):
    url, etag = job_url_and_etag
    response = api.get(url, HTTP_IF_NONE_MATCH=header.format(bare=etag.strip('"')))
    assert response.status_code == 200 and response.json()["url"] == url


def test_a_batch_answers_304_to_a_weak_or_star_validator(api):
    batch = _post_batch(api, 2).json()
    first = api.get(batch["url"])
    for header in (f"W/{first['ETag']}", "*"):
        assert api.get(batch["url"], HTTP_IF_NONE_MATCH=header).status_code == 304, header


def test_star_on_an_unknown_job_is_still_404(api):
    response = api.get("/api/v1/jobs/7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11", HTTP_IF_NONE_MATCH="*")
    assert_error(response, 404, "job_not_found")
