"""The web client in Debian's Chromium (Playwright, never a downloaded browser), against the real
web server (the edge that holds long-polls) and a real worker on the fake model: sign in, upload a
PNG, a DICOM and a third image, watch them queue, cancel one, see the other two finish live, read
the chart, the operating point and the untrained banner, check accessibility with axe-core, look
at it at tablet width, sign out. Nothing leaves 127.0.0.1 and the CSP blocks nothing.

Screenshots go to docs/screenshots/web-client-*.png.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.browser import CHROMIUM, needs_chromium, offline, screenshots_dir
from tests.factories import DATA, client_and_key

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]

PNG = DATA / "00000001_000.png"
DICOM = DATA / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
THIRD = DATA / "h0001.png"
SERVER_ENV = {
    "DJANGO_DEBUG": "false",
    "CXRQ_UPLOAD_RATE": "0",
    "CXRQ_READ_RATE": "0",
    "CXRQ_WEB_SIGN_IN_RATE": "0",
}


def serious(results: dict) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def check_accessibility(page, axe, name: str, found: dict) -> None:
    results = axe.run(page).response
    found[name] = [f"{v['id']} ({v['impact']})" for v in results["violations"]]
    assert serious(results) == [], (name, serious(results))


def test_a_clinician_signs_in_uploads_watches_reads_cancels_and_signs_out(start_web, start_worker, tmp_path):
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import expect, sync_playwright

    _, key = client_and_key(name="radiology-ward")
    server = start_web(SERVER_ENV)
    server.wait_ready()
    shots = screenshots_dir(tmp_path)
    outside: list[str] = []
    errors: list[str] = []
    watch_requests: list[float] = []
    axe_found: dict[str, list[str]] = {}
    axe = Axe()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        offline(context, outside)
        context.on("request", lambda r: "/watch?" in r.url and watch_requests.append(time.monotonic()))
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # --- sign in (keyboard first: the skip link, then the key field by its label)
            page.goto(f"{server.url}/")
            page.keyboard.press("Tab")
            expect(page.locator(":focus")).to_have_text("Skip to main content")
            check_accessibility(page, axe, "sign-in", axe_found)
            page.get_by_label("API key").fill("abcd1234.wrong")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("not valid")
            # The refused sign-in is a 401 page, which Chromium logs; nothing else may be.
            assert [e for e in errors if "401" not in e] == [], errors
            errors.clear()
            page.get_by_label("API key").fill(key)
            page.get_by_label("API key").press("Enter")
            expect(page.locator(".account")).to_contain_text("radiology-ward")
            page.screenshot(path=str(shots / "web-client-signed-in.png"), full_page=True)

            # --- upload three files; no worker yet, so they wait in the queue
            page.set_input_files("#images", [str(PNG), str(DICOM), str(THIRD)])
            expect(page.locator("#selected-files li")).to_have_count(3)
            page.get_by_label("Routine").check()
            page.get_by_role("button", name="Upload", exact=True).click()
            cards = page.locator(".upload-card[data-upload-for]")
            expect(cards).to_have_count(3, timeout=30_000)
            for path in (PNG, DICOM, THIRD):
                card = page.locator(".upload-card", has_text=path.name)
                expect(card.locator(".job-status .status")).to_have_text("Queued")
            # No worker yet: the page says so rather than a number of jobs ahead.
            expect(page.locator(".upload-card", has_text=THIRD.name).locator(".queue")).to_have_text(
                "No worker is running: this job will start when one does"
            )
            page.screenshot(path=str(shots / "web-client-queued.png"), full_page=True)

            # --- cancel the third while it is queued
            third = page.locator(".upload-card", has_text=THIRD.name)
            third.get_by_role("button", name="Cancel this job").click()
            expect(third.locator(".job-status .status")).to_have_text("Cancelled")
            expect(third.locator("[data-message-for]")).to_contain_text("will not be analysed")

            # --- a worker starts: the other two change on the page by themselves (long-poll)
            before = len(watch_requests)
            started = time.monotonic()
            worker = start_worker({"CXRQ_MODEL_FAKE": "1"})
            worker.wait_ready()
            for path in (PNG, DICOM):
                card = page.locator(".upload-card", has_text=path.name)
                expect(card.locator(".job-status .status")).to_have_text("Succeeded", timeout=90_000)
            elapsed = time.monotonic() - started
            polls = len(watch_requests) - before
            # One held request per change or per wait, never a 100 ms loop.
            assert polls <= 6 + elapsed / 2, (polls, elapsed)

            # --- the results: thumbnail, sorted chart with the operating point, banner, provenance
            for path in (PNG, DICOM):
                card = page.locator(".upload-card", has_text=path.name)
                expect(card.locator(".banner-untrained")).to_contain_text(
                    "Untrained weights: not for clinical use"
                )
                rows = card.locator("svg.bar-chart g.bar-row")
                expect(rows).to_have_count(18)
                values = [float(v) for v in rows.evaluate_all("rs => rs.map(r => r.dataset.probability)")]
                assert values == sorted(values, reverse=True)
                expect(card.locator("svg.bar-chart line.threshold")).to_have_count(1)
                image = card.locator("img[data-thumbnail-for]")
                expect(image).to_be_visible()
                page.wait_for_function(
                    "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
                )
                assert image.evaluate("img => img.naturalWidth") > 100
                provenance = card.locator("dl[data-provenance-for]").inner_text()
                for word in ("Model version", "Weights", "Backend", "Precision"):
                    assert word in provenance, (word, provenance)
            page.locator(".upload-card", has_text=DICOM.name).scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "web-client-results.png"), full_page=True)
            check_accessibility(page, axe, "home-with-results", axe_found)

            # --- downloads
            dicom_card = page.locator(".upload-card", has_text=DICOM.name)
            dicom_job = dicom_card.get_attribute("data-upload-for")
            with page.expect_download() as download:
                dicom_card.get_by_role("link", name="CSV result").click()
            lines = Path(download.value.path()).read_text().splitlines()
            assert lines[0].startswith("job_id,reference,finding,probability") and len(lines) == 19

            # --- the job's own page, and the list with its filter
            dicom_card.get_by_role("link", name="Open this job on its own page").click()
            expect(page.get_by_role("heading", level=1)).to_contain_text("Job")
            expect(page.locator("svg.bar-chart g.bar-row")).to_have_count(18)
            page.screenshot(path=str(shots / "web-client-job.png"), full_page=True)
            check_accessibility(page, axe, "job-page", axe_found)
            page.goto(f"{server.url}/")
            page.get_by_label("Status").select_option("cancelled")
            page.get_by_role("button", name="Show").click()
            expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
            expect(page.locator("#jobs-table tbody tr .status")).to_have_text("Cancelled")

            # --- tablet width: one column, nothing wider than the screen
            page.set_viewport_size({"width": 768, "height": 1024})
            page.goto(f"{server.url}/")
            assert page.evaluate("document.documentElement.scrollWidth") <= 768
            page.screenshot(path=str(shots / "web-client-tablet.png"), full_page=True)
            check_accessibility(page, axe, "home-tablet", axe_found)

            # --- sign out: the session is gone, pages ask for the key again
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_label("API key")).to_be_visible()
            expect(page.get_by_role("status")).to_contain_text("You have signed out.")
            page.goto(f"{server.url}/jobs/{dicom_job}")
            expect(page.get_by_label("API key")).to_be_visible()
            assert urlparse(page.url).path == "/"

            assert page.evaluate("window.__csp") == []
            assert errors == [], errors
            assert outside == [], outside
        finally:
            context.close()
            browser.close()
    print("axe violations (any impact):", axe_found)
