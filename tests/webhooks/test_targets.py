"""The callback allow-list's ports: an entry may name one, and a URL's port must match it; an entry
without a port allows only the scheme's default port."""

from __future__ import annotations

import pytest

from backend.jobs import errors
from backend.webhooks.targets import AllowList, check_callback_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_loopback_shortcut(settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    settings.WEBHOOK_REQUIRE_HTTPS = False


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("hooks.allowed.test", "https://hooks.allowed.test/x"),
        ("hooks.allowed.test", "https://hooks.allowed.test:443/x"),
        ("hooks.allowed.test", "http://hooks.allowed.test/x"),
        ("hooks.allowed.test:8443", "https://hooks.allowed.test:8443/x"),
        ("HOOKS.Allowed.test.:8443", "https://hooks.allowed.test:8443/x"),
        ("hooks.allowed.test:*", "https://hooks.allowed.test:6379/x"),
        ("*.ris.test:9000", "http://a.ris.test:9000/x"),
        ("10.20.0.0/16:9000", "http://10.20.3.4:9000/x"),
        ("10.20.0.0/16", "https://10.20.3.4/x"),
        ("[fd00::/8]:8443", "https://[fd00::1]:8443/x"),
        ("fd00::/8", "https://[fd00::1]/x"),
        ("[fd00::1]", "https://[fd00::1]/x"),
        ("other.test:1\nhooks.allowed.test:8443", "https://hooks.allowed.test:8443/x"),
    ],
)
def test_an_entry_allows_its_port(allowed, url):
    assert check_callback_url(url, allowed_hosts=allowed) == url


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("hooks.allowed.test", "http://hooks.allowed.test:6379/x"),  # Redis behind an allowed name
        ("hooks.allowed.test", "https://hooks.allowed.test:8443/x"),
        ("hooks.allowed.test", "http://hooks.allowed.test:443/x"),  # 443 is https's default, not http's
        ("hooks.allowed.test:8443", "https://hooks.allowed.test/x"),
        ("hooks.allowed.test:8443", "https://hooks.allowed.test:8444/x"),
        ("*.ris.test:9000", "http://a.ris.test:9001/x"),
        ("10.20.0.0/16", "http://10.20.3.4:6379/x"),
        ("10.20.0.0/16:9000", "http://10.20.3.4:9001/x"),
        ("[fd00::/8]:8443", "https://[fd00::1]:9443/x"),
        ("hooks.allowed.test:abc", "https://hooks.allowed.test/x"),  # not an entry: allows nothing
        ("hooks.allowed.test:0", "https://hooks.allowed.test/x"),
        ("hooks.allowed.test:70000", "https://hooks.allowed.test/x"),
        ("[fd00::1", "https://[fd00::1]/x"),
    ],
)
def test_a_url_whose_port_no_entry_names_is_refused(allowed, url):
    with pytest.raises(errors.CallbackUrlNotAllowed) as refused:
        check_callback_url(url, allowed_hosts=allowed)
    assert "port" in refused.value.details


def test_a_network_entry_still_covers_its_addresses_whatever_its_port():
    """At delivery the URL's host and port were allowed already; a network entry then says which
    private addresses the name may resolve to."""
    import ipaddress

    allow = AllowList.parse("hooks.allowed.test:8443, 10.20.0.0/16:9000")
    assert allow.covers(ipaddress.ip_address("10.20.1.1"))
    assert not allow.covers(ipaddress.ip_address("10.21.1.1"))


def test_a_callback_on_another_port_of_an_allowed_host_is_refused_at_upload(api, settings):
    """Through the API: the report's case, hooks.allowed.test:6379 with the entry hooks.allowed.test."""
    from tests.factories import assert_error, client_and_key, png_bytes, post_image

    client = client_and_key()[0]
    client.webhook_allowed_hosts = "hooks.allowed.test"
    client.save()
    refused = post_image(api, png_bytes(seed=1), fields={"callback_url": "http://hooks.allowed.test:6379/"})
    error = assert_error(refused, 400, "callback_url_not_allowed")
    assert error["details"] == {"host": "hooks.allowed.test", "port": 6379}
    ok = post_image(api, png_bytes(seed=2), fields={"callback_url": "http://hooks.allowed.test/hook"})
    assert ok.status_code == 202, ok.content
