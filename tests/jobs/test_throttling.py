"""The upload rate limit (429 + Retry-After), per caller."""

from __future__ import annotations

import pytest

from tests.factories import assert_error, png_bytes, post_image

pytestmark = pytest.mark.django_db


def test_upload_rate_per_address_gets_429_with_retry_after(api, settings):
    settings.UPLOAD_RATE = "3/min"
    for seed in range(3):
        assert post_image(api, png_bytes(seed=seed)).status_code == 202
    response = post_image(api, png_bytes(seed=9))
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert api.get("/api/v1/jobs").status_code == 200  # reads are not throttled
    other = post_image(api, png_bytes(seed=10), REMOTE_ADDR="10.0.0.7")
    assert other.status_code == 202  # per address
