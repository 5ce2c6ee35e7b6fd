"""The web client as a browser without script sees it (Django's test client), signed in or not."""

from __future__ import annotations

import pytest
from django.test import Client as BrowserClient

from backend.clients.models import Client
from tests.factories import client_and_key

WEB_CLIENT = "ward-7"


@pytest.fixture(autouse=True)
def _no_sign_in_rate(settings):
    """Sign-in attempts are counted per address in the shared rate store: every test here comes
    from 127.0.0.1. The test of that limit sets its own rate and address."""
    settings.WEB_SIGN_IN_RATE = "0"


@pytest.fixture
def web_key(db) -> str:
    """A submit key of the web test client."""
    return client_and_key(name=WEB_CLIENT)[1]


@pytest.fixture
def web_client_row(web_key) -> Client:
    return Client.objects.get(name=WEB_CLIENT)


@pytest.fixture
def browser(db) -> BrowserClient:
    """A browser with cookies, not signed in."""
    return BrowserClient()


@pytest.fixture
def signed_in(browser, web_key) -> BrowserClient:
    response = browser.post("/sign-in", {"api_key": web_key})
    assert response.status_code == 302 and response["Location"] == "/"
    return browser
