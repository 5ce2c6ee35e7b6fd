"""Files the site serves beside its pages, so that nothing is fetched from the internet:
the favicon at /favicon.ico (browsers ask for it on every site, whatever the page links), and
ReDoc's bundle without its one off-site request.

ReDoc's side menu always shows "API docs by Redocly" with a logo it loads from
https://cdn.redoc.ly/redoc/logo-mini.svg (hard-coded in redoc.standalone.js, no option turns it
off). The CSP stopped it, but the page still asked, which contradicts "nothing from the internet"
and shows as a CSP violation. The bundle (drf-spectacular-sidecar's, unchanged on disk) is served
here with that address replaced by an empty data: URL: the image fails at once, without a
request, and ReDoc's own onError handler then drops it.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_safe
from drf_spectacular.views import SpectacularRedocView

from backend.core.conditional import if_none_match

STATIC = Path(__file__).resolve().parent / "static" / "web"
REDOC_BUNDLE = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'
NO_IMAGE = b'"data:,"'
ONE_DAY = 86400


@lru_cache(maxsize=1)
def favicon_bytes() -> bytes:
    return (STATIC / "favicon.ico").read_bytes()


@require_safe
def favicon(_request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        favicon_bytes(), content_type="image/x-icon", headers={"Cache-Control": f"public, max-age={ONE_DAY}"}
    )


class LocalAssetError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def redoc_bundle_bytes() -> tuple[bytes, bytes, str]:
    """The bundle with the logo's address replaced, gzipped too, and its ETag. A bundle without
    that address (a newer sidecar) is served as it is: tests/web/test_assets.py then says so."""
    found = finders.find(REDOC_BUNDLE)
    if not found:
        raise LocalAssetError(f"{REDOC_BUNDLE} not found: is drf-spectacular-sidecar installed?")
    body = Path(found).read_bytes().replace(REDOC_LOGO, NO_IMAGE)
    etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
    return body, gzip.compress(body, mtime=0), etag


@require_safe
def redoc_bundle(request: HttpRequest) -> HttpResponse:
    body, zipped, etag = redoc_bundle_bytes()
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={ONE_DAY}", "Vary": "Accept-Encoding"}
    if if_none_match(request, etag):
        return HttpResponse(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = zipped
    return HttpResponse(body, content_type="text/javascript; charset=utf-8", headers=headers)


class RedocView(SpectacularRedocView):
    """drf-spectacular's ReDoc page, loading the bundle above instead of the sidecar's own."""

    @staticmethod
    def _redoc_standalone() -> str:
        return reverse("web:redoc-bundle")
