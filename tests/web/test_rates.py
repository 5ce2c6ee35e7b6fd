"""The web client's uploads against its client's upload rate: every file counts, all or nothing."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.jobs.models import Job
from tests.factories import png_bytes

pytestmark = pytest.mark.django_db


def _files(n: int, start: int = 0) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(f"{i}.png", png_bytes(seed=i)) for i in range(start, start + n)]


def test_more_files_than_the_whole_rate_are_refused_in_words_not_a_500(signed_in, web_client_row):
    web_client_row.upload_rate = "2/min"
    web_client_row.save()
    response = signed_in.post("/uploads", {"images": _files(3)}, follow=True)
    assert response.status_code == 200
    assert "Upload at most 2 images at once." in response.content.decode()
    assert Job.objects.count() == 0
    # Nothing was charged: the whole rate is still there, then no more.
    assert signed_in.post("/uploads", {"images": _files(2, start=3)}).status_code == 302
    assert Job.objects.count() == 2
    refused = signed_in.post("/uploads", {"images": _files(1, start=5)}, follow=True)
    assert Job.objects.count() == 2 and refused.status_code == 200
