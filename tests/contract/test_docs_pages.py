"""The contract's pages, Swagger UI at /api/docs/ and ReDoc at /api/redoc/, render in headless
Chromium offline: every request that is not to the server on 127.0.0.1 is aborted and recorded,
and none may happen; the pages show every operation the schema lists; nothing is written to the
console as an error and the Content-Security-Policy the server sends blocks nothing.

Chromium is Debian's (/usr/bin/chromium, or CXRQ_CHROMIUM), never a browser downloaded by
`playwright install`; `make test` installs it when run as root.
"""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from tests.browser import CHROMIUM, is_local, needs_chromium, offline

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]

# Off-site references hard-coded in a bundle that the CSP is expected to stop before any request is
# made (so nothing goes out): ReDoc's side menu always shows "API docs by Redocly" with this logo.
BLOCKED_BY_CSP = {"https://cdn.redoc.ly/redoc/logo-mini.svg": "img-src"}


class Browser:
    """One headless Chromium context whose network ends at 127.0.0.1: every other request is
    aborted and kept in `outside`; console errors and page errors are kept too."""

    def __init__(self, playwright) -> None:
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        self.context = self.browser.new_context(service_workers="block")
        self.outside: list[str] = []  # reached the network layer: aborted there
        self.requested_outside: list[str] = []  # asked for by a page, whether or not the CSP let it go
        self.local: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        offline(self.context, self.outside)
        self.context.on("request", self._request)
        self.context.on("requestfailed", self._failed)

    def _request(self, request) -> None:
        if is_local(request.url):
            self.local.append(request.url)
        else:
            self.requested_outside.append(request.url)

    def _failed(self, request) -> None:
        # A request the CSP stopped in the page never reached the network (nor the route above).
        if not (request.failure == "csp" and request.url in BLOCKED_BY_CSP):
            self.failed.append(f"{request.url} {request.failure}")

    def _console(self, message) -> None:
        expected = any(url in message.text for url in BLOCKED_BY_CSP)
        if message.type == "error" and not expected:
            self.errors.append(f"console: {message.text}")

    def open(self, url: str):
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        response = page.goto(url, wait_until="networkidle")
        assert response is not None and response.status == 200, url
        assert self.outside == [], self.outside  # nothing went out (asked for here, refused by the route)
        return page, response

    def close(self) -> None:
        self.context.close()
        self.browser.close()


def _operations(schema: dict) -> list[tuple[str, str, dict]]:
    methods = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in methods
    ]


def test_swagger_ui_and_redoc_render_every_operation_offline(contract_server):
    schema = requests.get(f"{contract_server.url}/api/schema/?format=json", timeout=30).json()
    operations = _operations(schema)
    assert operations
    with sync_playwright() as playwright:
        browser = Browser(playwright)
        try:
            # Swagger UI: one block per operation, by method and path, once the schema has loaded.
            page, response = browser.open(f"{contract_server.url}/api/docs/")
            csp = response.headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "default-src 'self'" in csp, csp
            page.wait_for_selector(".opblock", timeout=30_000)
            assert schema["info"]["title"] in page.locator(".info .title").inner_text()
            for method, path, _ in operations:
                block = page.locator(f'.opblock-{method} .opblock-summary-path[data-path="{path}"]')
                assert block.count() == 1, (method, path)
            upload = page.locator('.opblock-post:has(.opblock-summary-path[data-path="/api/v1/jobs"])')
            assert upload.locator(".opblock-summary-method").inner_text() == "POST"
            assert page.evaluate("window.__csp") == []  # nothing blocked

            # ReDoc: the title, and every operation in the menu by its summary.
            page, response = browser.open(f"{contract_server.url}/api/redoc/")
            assert "script-src 'self'" in response.headers.get("content-security-policy", "")
            page.wait_for_selector("h1", timeout=30_000)
            assert schema["info"]["title"] in page.locator("h1").first.inner_text()
            menu = page.locator("[role=menuitem]").all_inner_texts()
            for method, path, operation in operations:
                label = operation.get("summary") or operation["operationId"]
                assert any(label in item for item in menu), (method, path, label, menu)
            violations = set(page.evaluate("window.__csp"))
            assert violations <= {f"{d} {url}" for url, d in BLOCKED_BY_CSP.items()}, (
                violations
            )  # none of its own

            assert browser.errors == [], browser.errors
            assert browser.failed == [], browser.failed
            assert browser.outside == [], browser.outside  # nothing went out
            assert set(browser.requested_outside) <= set(BLOCKED_BY_CSP), browser.requested_outside
            assert any("/static/" in url for url in browser.local), browser.local  # assets came from here

            # The net holds: a request elsewhere is refused and recorded.
            probe = browser.context.new_page()
            with pytest.raises(PlaywrightError):
                probe.goto("https://cdn.jsdelivr.net/npm/swagger-ui-dist/swagger-ui.css")
            assert browser.outside == ["https://cdn.jsdelivr.net/npm/swagger-ui-dist/swagger-ui.css"]
        finally:
            browser.close()
