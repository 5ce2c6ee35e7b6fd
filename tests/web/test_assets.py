"""What the site serves beside its pages: the favicon, ReDoc's bundle with nothing from the internet,
and the stylesheet rule that lets `hidden` hide what it marks (the browser test sees them in use)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

from backend.web import assets

pytestmark = pytest.mark.django_db


def test_favicon_ico_is_served_at_the_root_as_an_icon(browser):
    response = browser.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert "max-age" in response["Cache-Control"]


def test_every_page_links_its_icon_from_this_site(browser, signed_in):
    html = signed_in.get("/").content.decode()
    links = re.findall(r'<link rel="icon" href="([^"]+)"', html)
    assert links and all(href.startswith("/static/web/favicon.") for href in links), links
    for href in links:
        assert finders.find(href.removeprefix("/static/")), href


def test_redoc_loads_a_bundle_that_asks_nothing_from_the_internet(browser):
    page = browser.get("/api/redoc/")
    assert page.status_code == 200
    scripts = re.findall(r'<script src="([^"]+)"', page.content.decode())
    assert scripts == ["/api/redoc/redoc.standalone.js"], scripts

    response = browser.get(scripts[0], HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/javascript")
    body = gzip.decompress(response.content)
    original = Path(finders.find(assets.REDOC_BUNDLE)).read_bytes()
    assert assets.REDOC_LOGO in original  # else the replacement is moot: look for the new address
    assert b"cdn.redoc.ly" not in body and b"fonts.googleapis" not in body
    assert len(body) == len(original) - len(assets.REDOC_LOGO) + len(assets.NO_IMAGE)

    again = browser.get(scripts[0], HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    plain = browser.get(scripts[0])
    assert plain.content == body and "Content-Encoding" not in plain


def test_the_hidden_attribute_wins_over_the_stylesheets_display_rules():
    css = (assets.STATIC / "app.css").read_text()
    assert re.search(r"\[hidden\]\s*\{\s*display:\s*none\s*!important;?\s*\}", css)
