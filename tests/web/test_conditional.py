"""The web client's ETag'd answers (the image preview, the watched jobs' states) compare
If-None-Match as RFC 9110 §13.1.2 has it: weakly, `*` included, a list of tags."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.jobs.services import intake
from tests.factories import png_bytes, sample_bytes

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("header", ["W/{etag}", "*", '"other", W/{etag}'])
def test_the_preview_is_304_to_weak_star_and_list_validators(signed_in, web_client_row, header):
    job = intake.job_create(
        client=web_client_row, upload=SimpleUploadedFile("x.png", sample_bytes("00000001_000.png"))
    ).job
    first = signed_in.get(f"/jobs/{job.id}/thumbnail.png")
    assert first.status_code == 200
    again = signed_in.get(
        f"/jobs/{job.id}/thumbnail.png", HTTP_IF_NONE_MATCH=header.format(etag=first["ETag"])
    )
    assert again.status_code == 304 and again.content == b""


def test_a_malformed_header_that_contains_the_tag_is_not_a_match(signed_in, web_client_row):
    """The old test was a substring search: any header containing the tag matched."""
    job = intake.job_create(client=web_client_row, upload=SimpleUploadedFile("x.png", png_bytes(seed=7))).job
    etag = signed_in.get(f"/jobs/{job.id}/thumbnail.png")["ETag"]
    for header in (f"{etag}x", f"x{etag}"):
        assert signed_in.get(f"/jobs/{job.id}/thumbnail.png", HTTP_IF_NONE_MATCH=header).status_code == 200


@pytest.mark.parametrize("header", ["W/{etag}", "*"])
def test_watch_is_304_to_weak_and_star_validators(signed_in, web_client_row, header):
    job = intake.job_create(client=web_client_row, upload=SimpleUploadedFile("x.png", png_bytes(seed=8))).job
    first = signed_in.get(f"/watch?ids={job.id}")
    assert first.status_code == 200
    again = signed_in.get(f"/watch?ids={job.id}", HTTP_IF_NONE_MATCH=header.format(etag=first["ETag"]))
    assert again.status_code == 304
