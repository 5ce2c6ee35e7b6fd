from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect

from backend.core.logging import request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Takes X-Request-ID from the client when well-formed, else makes one; echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class ContentSecurityPolicyMiddleware:
    """A Content-Security-Policy on every response: HTML pages (the admin, docs, the web client)
    load only this site's own scripts, styles and images and cannot be framed; anything else
    (the JSON API) may load nothing at all. Django 5.2 has no CSP of its own (6.0 adds one)."""

    HTML = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    OTHER = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            html = response.get("Content-Type", "").startswith("text/html")
            response["Content-Security-Policy"] = self.HTML if html else self.OTHER
        return response


class HttpsRedirectMiddleware:
    """Plain HTTP is redirected to the same path on CXRQ_PUBLIC_URL (production).

    Django's SECURE_SSL_REDIRECT builds the target from the request's Host header, which the
    client chooses: `Host: evil.example` sent to an allowed name by an attacker on the path
    gives a redirect to https://evil.example/... Here the target is always the configured
    public address; the Host header is not read at all. GET and HEAD get 301; other methods
    get 308, which keeps the method and body (a 301 turns a POST into a GET in most clients).
    Paths matching SECURE_REDIRECT_EXEMPT (health, metrics: probes inside the network) pass.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.target = settings.PUBLIC_URL.rstrip("/")
        if not self.target.startswith("https://"):
            raise ImproperlyConfigured("HttpsRedirectMiddleware needs CXRQ_PUBLIC_URL, an https:// address")
        self.exempt = [re.compile(pattern) for pattern in settings.SECURE_REDIRECT_EXEMPT]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.is_secure() or any(p.search(request.path.lstrip("/")) for p in self.exempt):
            return self.get_response(request)
        response = HttpResponsePermanentRedirect(self.target + request.get_full_path())
        if request.method not in ("GET", "HEAD"):
            response.status_code = 308
        return response
