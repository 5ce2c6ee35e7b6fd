"""What the browser tests share: Debian's Chromium (never a browser downloaded by `playwright
install`; `make test` installs the package when run as root), and the skip that says what to
install where it is missing."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("CXRQ_CHROMIUM", "/usr/bin/chromium")

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"Chromium not found at {CHROMIUM}: install Debian's, as root `apt-get update && "
    "apt-get install -y chromium` (`make test` does it when run as root), or set CXRQ_CHROMIUM",
)


def screenshots_dir(tmp_path: Path) -> Path:
    """Where a browser test saves its screenshots: docs/screenshots/ when CXRQ_SCREENSHOTS=docs (to
    refresh the ones the docs show: `make screenshots`), else the test's own folder, so that a test
    run never changes a committed file."""
    if os.environ.get("CXRQ_SCREENSHOTS") == "docs":
        folder = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    else:
        folder = tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Every CSP violation the page reports, whatever the console says (read back as window.__csp).
CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""
LOCAL_SCHEMES = ("data", "blob", "about")


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in LOCAL_SCHEMES or parsed.hostname == "127.0.0.1"


def offline(context, outside: list[str]) -> None:
    """Record CSP violations in every page of `context`, and end its network at 127.0.0.1: every
    other request is aborted and its URL appended to `outside`."""

    def route(r) -> None:
        if is_local(r.request.url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort("internetdisconnected")

    context.add_init_script(CSP_PROBE)
    context.route("**/*", route)
