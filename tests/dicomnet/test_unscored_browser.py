"""The web client's page of DICOM instances not scored, in Debian's Chromium against the real web
server: reached from the job list by keyboard, filtered by its labelled select, no serious axe-core
violation, no CSP violation, nothing fetched from outside 127.0.0.1."""

from __future__ import annotations

import pytest

from backend.dicomnet import services
from tests.browser import CHROMIUM, needs_chromium, offline, screenshots_dir
from tests.dicomnet.factories import changed, cr_chest, non_image, uids
from tests.factories import client_and_key

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), needs_chromium]

SERVER_ENV = {"DJANGO_DEBUG": "false", "CXRQ_READ_RATE": "0", "CXRQ_WEB_SIGN_IN_RATE": "0"}


def _receive(sender, data: bytes) -> None:
    sop_class, sop_instance = uids(data)
    services.instance_receive(
        sender=sender, part10=data, sop_class_uid=sop_class, sop_instance_uid=sop_instance
    )


def test_the_unscored_page_is_reached_by_keyboard_filters_and_passes_axe(start_web, tmp_path):
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import expect, sync_playwright

    client, key = client_and_key(name="radiology-pacs")
    sender = services.sender_add(ae_title="ORTHANC", client=client)
    _receive(sender, changed(cr_chest(seed=1), ViewPosition="LL"))
    _receive(sender, non_image("1.2.840.10008.5.1.4.1.1.88.33", modality="SR"))
    server = start_web(SERVER_ENV)
    server.wait_ready()
    shots = screenshots_dir(tmp_path)
    outside: list[str] = []
    errors: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        offline(context, outside)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{server.url}/")
            page.get_by_label("API key").fill(key)
            page.get_by_label("API key").press("Enter")
            link = page.get_by_role("link", name="DICOM instances received but not scored")
            link.focus()
            page.keyboard.press("Enter")
            expect(page.get_by_role("heading", level=1)).to_have_text("DICOM instances received, not scored")
            rows = page.locator("#unscored-table tbody tr")
            expect(rows).to_have_count(2)
            expect(page.locator("tr[data-reason='not_chest_xray']")).to_contain_text("ViewPosition")
            expect(page.locator("tr[data-reason='not_an_image']")).to_contain_text("Comprehensive SR Storage")
            page.screenshot(path=str(shots / "web-client-unscored.png"), full_page=True)
            results = Axe().run(page).response
            serious = [v["id"] for v in results["violations"] if v["impact"] in ("serious", "critical")]
            assert serious == [], serious

            page.get_by_label("Reason").select_option("not_an_image")
            page.get_by_role("button", name="Show").click()
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("Not an image")
            assert page.evaluate("window.__csp") == []
        finally:
            browser.close()
    assert outside == [] and errors == [], (outside, errors)
