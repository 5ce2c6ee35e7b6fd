"""Every job endpoint needs a client's key: 401 for none or a bad one, 403 for the wrong scope."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backend.clients import services
from backend.clients.models import Scope
from tests.factories import assert_error, client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11"),
    ("post", "/api/v1/jobs"),
]


def _call(api, method: str, path: str, **headers):
    if method == "post":
        return post_image(api, png_bytes(seed=1), **headers)
    return getattr(api, method)(path, **headers)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_key_is_401_with_www_authenticate(anonymous_api, method, path):
    response = _call(anonymous_api, method, path)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Api-Key")


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key",  # no key
        "Api-Key nodot",  # malformed
        "Api-Key abcdefgh.",  # empty secret
        "Api-Key abc.defghijk",  # short prefix
        "Api-Key abcdefgh.ijklmnopqrstuvwxyzABCDEF0123456",  # well formed, unknown
        "Basic dXNlcjpwYXNz",  # another scheme
        "Api-Key \u00e9bcdefgh.ijklmnop",  # not ASCII
    ],
)
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_bad_key_is_401(anonymous_api, method, path, header):
    response = _call(anonymous_api, method, path, HTTP_AUTHORIZATION=header)
    assert_error(response, 401, "invalid_api_key")
    assert response["WWW-Authenticate"].startswith("Api-Key")


def test_a_key_with_a_wrong_secret_is_401(anonymous_api, api_key):
    prefix = api_key.partition(".")[0]
    response = anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {prefix}.{'x' * 32}")
    assert_error(response, 401, "invalid_api_key")


def test_revoked_and_expired_keys_are_401(anonymous_api):
    client, key = client_and_key()
    assert anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 200
    assert services.api_key_revoke(client=client, prefix=key.partition(".")[0])
    assert_error(
        anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {key}"), 401, "invalid_api_key"
    )

    expired = services.api_key_create(
        client=client, name="old", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert_error(
        anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {expired.key}"), 401, "invalid_api_key"
    )


def test_bearer_is_accepted_too(anonymous_api, api_key):
    assert anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200


def test_a_read_key_reads_but_cannot_upload(anonymous_api, api):
    job = post_image(api, png_bytes(seed=2)).json()
    _, read_key = client_and_key(scope=Scope.READ)
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {read_key}"}
    assert anonymous_api.get(f"/api/v1/jobs/{job['id']}", **auth).status_code == 200
    assert_error(post_image(anonymous_api, png_bytes(seed=3), **auth), 403, "insufficient_scope")


def test_an_operator_key_sees_no_job_data(anonymous_api, api):
    job = post_image(api, png_bytes(seed=4)).json()
    _, operator_key = client_and_key(scope=Scope.OPERATOR)
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {operator_key}"}
    assert_error(anonymous_api.get(f"/api/v1/jobs/{job['id']}", **auth), 403, "insufficient_scope")
    assert_error(anonymous_api.get("/api/v1/jobs", **auth), 403, "insufficient_scope")


def test_rotation_two_live_keys_then_the_old_one_revoked(anonymous_api):
    client, old = client_and_key()
    new = services.api_key_create(client=client, name="rotated").key
    for key in (old, new):
        assert anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 200
    services.api_key_revoke(client=client, prefix=old.partition(".")[0])
    assert anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {old}").status_code == 401
    assert anonymous_api.get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Api-Key {new}").status_code == 200
