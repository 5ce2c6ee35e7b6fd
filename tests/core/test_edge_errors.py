"""Refusals Django makes before any view: a bad Host (one WARNING line, no traceback), a CSRF
failure (the error shape, or the web client's own page), plain HTTP in production (a redirect to
CXRQ_PUBLIC_URL, never to the request's Host)."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client as BrowserClient
from django.test import RequestFactory, override_settings

from backend.core.middleware import HttpsRedirectMiddleware

pytestmark = pytest.mark.django_db


# --- a Host not in ALLOWED_HOSTS ------------------------------------------------------------


def test_a_bad_host_is_one_warning_line_without_a_traceback(client, caplog):
    caplog.set_level(logging.DEBUG)
    response = client.get("/api/v1/jobs", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert json.loads(response.content)["error"]["code"] == "bad_request"
    records = [r for r in caplog.records if r.name.startswith("django.security")]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None and record.exc_text is None
    assert record.getMessage() == "event=disallowed_host host='evil.example' status=400"
    assert "Traceback" not in caplog.text


def test_a_long_or_forged_host_is_quoted_and_cut(client, caplog):
    caplog.set_level(logging.WARNING)
    forged = "a" * 300 + " event=admin_login level=ERROR"
    assert client.get("/", HTTP_HOST=forged).status_code == 400
    (record,) = [r for r in caplog.records if r.name.startswith("django.security")]
    message = record.getMessage()
    assert len(message) < 160 and "event=admin_login" not in message
    assert message.startswith("event=disallowed_host host='aaaa")


# --- CSRF -----------------------------------------------------------------------------------


def test_a_csrf_failure_on_a_web_client_form_is_its_own_page():
    strict = BrowserClient(enforce_csrf_checks=True)
    response = strict.post("/sign-in", {"api_key": "x"})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "This form could not be sent" in page and 'href="/"' in page
    assert "CSRF verification failed" not in page  # not Django's stock page


def test_a_csrf_failure_for_the_web_clients_script_is_the_error_shape():
    strict = BrowserClient(enforce_csrf_checks=True)
    response = strict.post("/uploads", {}, HTTP_ACCEPT="application/json")
    assert response.status_code == 403 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "csrf_failed" and error["message"] and error["details"]["reason"]


def test_a_csrf_failure_on_the_admin_is_the_error_shape():
    strict = BrowserClient(enforce_csrf_checks=True)
    response = strict.post("/admin/login/", {"username": "a", "password": "b"})
    assert response.status_code == 403 and response["Content-Type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["code"] == "csrf_failed"


# --- the HTTPS redirect ---------------------------------------------------------------------

PUBLIC_URL = "https://cxrq.hospital.example"


def _redirect(settings, path: str, method: str = "get", **extra):
    settings.PUBLIC_URL = PUBLIC_URL
    settings.SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$", r"^metrics$"]
    middleware = HttpsRedirectMiddleware(lambda request: pytest.fail("passed through"))
    return middleware(getattr(RequestFactory(), method)(path, **extra))


def test_plain_http_is_redirected_to_the_public_url_whatever_the_host(settings):
    response = _redirect(settings, "/api/v1/jobs?page=2", HTTP_HOST="127.0.0.1:31337")
    assert response.status_code == 301
    assert response["Location"] == f"{PUBLIC_URL}/api/v1/jobs?page=2"


def test_a_post_is_redirected_with_308_to_keep_its_method(settings):
    response = _redirect(settings, "/api/v1/jobs", method="post", HTTP_HOST="evil.example")
    assert response.status_code == 308 and response["Location"] == f"{PUBLIC_URL}/api/v1/jobs"


def test_a_path_that_looks_like_a_host_stays_on_the_public_url(settings):
    response = _redirect(settings, "//evil.example/x")
    assert response["Location"].startswith(f"{PUBLIC_URL}/")


def test_health_https_and_exempt_paths_pass(settings):
    settings.PUBLIC_URL = PUBLIC_URL
    settings.SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$"]
    middleware = HttpsRedirectMiddleware(lambda request: "passed")
    factory = RequestFactory()
    assert middleware(factory.get("/api/v1/health")) == "passed"
    assert middleware(factory.get("/api/v1/jobs", secure=True)) == "passed"


def test_the_redirect_needs_an_https_public_url(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.PUBLIC_URL = ""
    with pytest.raises(ImproperlyConfigured):
        HttpsRedirectMiddleware(lambda request: None)


def test_through_the_middleware_stack(settings):
    """As production orders it: before SecurityMiddleware, so Django's own redirect never runs."""
    settings.PUBLIC_URL = PUBLIC_URL
    stack = list(settings.MIDDLEWARE)
    stack.insert(
        stack.index("django.middleware.security.SecurityMiddleware"),
        "backend.core.middleware.HttpsRedirectMiddleware",
    )
    with override_settings(MIDDLEWARE=stack, SECURE_REDIRECT_EXEMPT=[r"^api/v1/health$"]):
        response = BrowserClient().get("/api/v1/jobs", HTTP_HOST="127.0.0.1")
        assert response.status_code == 301 and response["Location"] == f"{PUBLIC_URL}/api/v1/jobs"
        assert "X-Request-ID" in response
        assert BrowserClient().get("/api/v1/health").status_code in (200, 503)
