"""The upload rate limit (429 + Retry-After), per client."""

from __future__ import annotations

import pytest

from tests.factories import assert_error, client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db


def test_upload_rate_is_per_client_whatever_key_or_address_with_retry_after(api, anonymous_api, settings):
    settings.UPLOAD_RATE = "3/min"
    for seed in range(3):
        assert post_image(api, png_bytes(seed=seed)).status_code == 202
    response = post_image(api, png_bytes(seed=9))
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert api.get("/api/v1/jobs").status_code == 200  # reads are not throttled
    # Another address, or another key of the same client: the same count.
    assert post_image(api, png_bytes(seed=10), REMOTE_ADDR="10.0.0.7").status_code == 429
    _, second_key = client_and_key()
    assert (
        post_image(anonymous_api, png_bytes(seed=11), HTTP_AUTHORIZATION=f"Api-Key {second_key}").status_code
        == 429
    )
    # Another client: its own count.
    _, other = client_and_key(name="hospital-b")
    assert (
        post_image(anonymous_api, png_bytes(seed=12), HTTP_AUTHORIZATION=f"Api-Key {other}").status_code
        == 202
    )
