"""Issue 28 in Debian's Chromium (Playwright), against the real web server and, later, a real worker
on the fake model: the nine samples of tests/data/cxr dropped on the page with a reference each
(a malformed one refused in the page first), the wait saying that no worker is running, the
uploads joining "Recent jobs" without a reload, then each job found by its reference in the list,
as its page's heading and in its CSV; the untrained marker in the list; delete asks first in a
dialog (Escape keeps the job, the keyboard confirms) and says it once; axe-core finds nothing
serious; ReDoc and every page ask nothing of the internet, and /favicon.ico is there.

Screenshots: docs/screenshots/web-client-list.png and web-client-job-reference.png (with
CXRQ_SCREENSHOTS=docs, else the test's own folder).
"""

from __future__ import annotations

import base64
import csv
import io
import mimetypes
import re
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, is_local, needs_chromium, offline, screenshots_dir
from tests.factories import DATA, client_and_key

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]

SAMPLES = sorted(p for p in DATA.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"))
SERVER_ENV = {
    "DJANGO_DEBUG": "false",
    "CXRQ_UPLOAD_RATE": "0",
    "CXRQ_READ_RATE": "0",
    "CXRQ_WEB_SIGN_IN_RATE": "0",
}
NO_WORKER = "No worker is running: this job will start when one does"
SECONDS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
CSV_HEADER = "job_id,reference,finding,probability,operating_point,scale,positive,model_version,weights"


def reference_for(i: int, path: Path) -> str:
    """Letters, digits, space and . _ - : / #, as a RIS might number its orders."""
    return f"ACC-{i + 1:03d}/{path.stem[:12]} #{i + 1}"


def serious(results: dict) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def drop(page, selector: str, paths: list[Path]) -> None:
    """Drop files on an element as a person drags them from a file manager (a real DataTransfer)."""
    files = [
        {
            "name": p.name,
            "type": mimetypes.guess_type(p.name)[0] or "application/dicom",
            "b64": base64.b64encode(p.read_bytes()).decode(),
        }
        for p in paths
    ]
    transfer = page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, {type: f.type}));
            }
            return dt;
        }""",
        files,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_samples_dropped_with_references_are_found_by_them_everywhere_and_delete_asks_first(
    start_web, start_worker, tmp_path
):
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import expect, sync_playwright

    assert len(SAMPLES) == 9, SAMPLES
    references = {path.name: reference_for(i, path) for i, path in enumerate(SAMPLES)}
    _, key = client_and_key(name="radiology-ward")
    server = start_web(SERVER_ENV)
    server.wait_ready()
    shots = screenshots_dir(tmp_path)
    outside: list[str] = []
    asked_outside: list[str] = []
    errors: list[str] = []
    axe = Axe()

    def accessible(page, name: str) -> None:
        found = serious(axe.run(page).response)
        assert found == [], (name, found)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
        offline(context, outside)
        context.on("request", lambda r: None if is_local(r.url) else asked_outside.append(r.url))
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{server.url}/")
            page.get_by_label("API key").fill(key)
            page.get_by_label("API key").press("Enter")
            expect(page.locator(".account")).to_contain_text("radiology-ward")
            expect(page.locator("#no-jobs")).to_be_visible()

            # --- drop the nine samples: each gets its own reference field
            drop(page, "#dropzone", SAMPLES)
            expect(page.locator("#selected-files li")).to_have_count(len(SAMPLES))
            expect(page.locator("#one-reference")).to_be_hidden()  # the form-without-script field
            first = page.get_by_label(f"Reference for {SAMPLES[0].name}")
            first.fill("bad;reference")
            page.get_by_role("button", name="Upload", exact=True).click()
            expect(page.locator("#upload-error")).to_contain_text("A reference is not valid")
            expect(first).to_have_attribute("aria-invalid", "true")
            expect(first).to_be_focused()
            expect(page.locator(".upload-card")).to_have_count(0)  # nothing was sent
            for path in SAMPLES:
                page.get_by_label(f"Reference for {path.name}").fill(references[path.name])
            expect(first).not_to_have_attribute("aria-invalid", "true")
            page.get_by_role("button", name="Upload", exact=True).click()

            # --- no worker yet: the page says so, not a number; the list has them without a reload
            cards = page.locator(".upload-card[data-upload-for]")
            expect(cards).to_have_count(len(SAMPLES), timeout=60_000)
            for path in SAMPLES:
                card = page.locator(".upload-card", has_text=path.name)
                expect(card.locator("h3")).to_have_text(f"{references[path.name]} · {path.name}")
                expect(card.locator(".job-status .queue")).to_have_text(NO_WORKER)
                expect(card.locator(".upload-line")).to_be_hidden()  # no stale "Uploading 100%"
            table = page.locator("#jobs-table")
            expect(table.locator("tbody tr")).to_have_count(len(SAMPLES))
            for reference in references.values():
                expect(table.get_by_role("link", name=reference, exact=True)).to_have_count(1)
            expect(page.locator("#no-jobs")).to_be_hidden()

            # --- a worker starts: every job ends on the page by itself, in its card and its row
            worker = start_worker({"CXRQ_MODEL_FAKE": "1"})
            worker.wait_ready()
            for path in SAMPLES:
                card = page.locator(".upload-card", has_text=path.name)
                expect(card.locator(".job-status .status")).to_have_text("Succeeded", timeout=120_000)
            rows = table.locator("tbody tr")
            expect(rows.locator(".status-succeeded")).to_have_count(len(SAMPLES), timeout=30_000)
            expect(rows.locator(".untrained-mark")).to_have_count(len(SAMPLES))
            expect(rows.first).to_contain_text("% · untrained weights")

            # --- the list after a reload: each job by its reference, the upload time to the second
            page.goto(f"{server.url}/")
            for reference in references.values():
                row = table.locator("tbody tr", has=page.get_by_role("link", name=reference, exact=True))
                expect(row).to_have_count(1)
                expect(row.locator("td").first).to_have_text(SECONDS)
            page.locator("#jobs-table").scroll_into_view_if_needed()
            page.locator("section", has=page.locator("#recent-heading")).screenshot(
                path=str(shots / "web-client-list.png")
            )
            accessible(page, "home")

            # --- each job's page is headed by its reference, and its CSV carries it
            for i, path in enumerate(SAMPLES):
                reference = references[path.name]
                page.goto(f"{server.url}/")
                table.get_by_role("link", name=reference, exact=True).click()
                expect(page.get_by_role("heading", level=1)).to_have_text(f"Job {reference}")
                job_id = page.url.rstrip("/").rsplit("/", 1)[1]
                expect(page.locator(".job-id")).to_have_text(f"Job {job_id}")
                with page.expect_download() as download:
                    page.get_by_role("link", name="CSV result").click()
                body = Path(download.value.path()).read_text()
                assert body.splitlines()[0] == CSV_HEADER
                found = list(csv.DictReader(io.StringIO(body)))
                assert len(found) == 18 and {r["reference"] for r in found} == {reference}, found[:1]
                assert {r["job_id"] for r in found} == {job_id}
                assert {r["weights"] for r in found} == {"untrained"}
                assert {r["scale"] for r in found} == {"raw"}
                if i == 0:
                    image = page.locator("img[data-thumbnail-for]")
                    page.wait_for_function(
                        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
                    )
                    page.screenshot(path=str(shots / "web-client-job-reference.png"), full_page=True)
                    accessible(page, "job page")

            # --- delete asks first: Escape keeps the job and gives focus back
            reference = references[SAMPLES[0].name]
            page.goto(f"{server.url}/")
            table.get_by_role("link", name=reference, exact=True).click()
            delete = page.get_by_role("button", name="Delete this job")
            delete.click()
            dialog = page.get_by_role("dialog", name="Delete this job?")
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text(f"The job {reference}")
            expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
            accessible(page, "delete dialog")
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
            expect(delete).to_be_focused()
            expect(page.locator(".job-status .status")).to_have_text("Succeeded")

            # ... and by keyboard alone it deletes, then says so once
            page.keyboard.press("Enter")
            expect(dialog).to_be_visible()
            page.keyboard.press("Shift+Tab")
            expect(dialog.get_by_role("button", name="Delete the job")).to_be_focused()
            page.keyboard.press("Enter")
            expect(page.locator(".job-status .status")).to_have_text("Deleted")
            expect(page.locator("[data-deleted-note]")).to_be_focused()
            expect(page.get_by_text("was deleted")).to_have_count(1)
            expect(page.locator("[data-message-for]")).to_have_text("")

            # --- from the list: the row goes, the list says it once
            other = references[SAMPLES[1].name]
            page.goto(f"{server.url}/")
            row = table.locator("tbody tr", has=page.get_by_role("link", name=other, exact=True))
            row.get_by_role("button", name="Delete this job").click()
            expect(dialog).to_contain_text(f"The job {other}")
            dialog.get_by_role("button", name="Delete the job").click()
            expect(row).to_have_count(0)
            expect(page.locator("#list-message")).to_have_text(
                f"The job {other} was deleted: its image and result are gone."
            )
            expect(page.get_by_text("was deleted")).to_have_count(1)

            # --- ReDoc asks nothing of the internet; the favicon is there
            docs = context.new_page()
            docs.on("console", lambda m: m.type == "error" and errors.append(f"redoc: {m.text}"))
            docs.goto(f"{server.url}/api/redoc/", wait_until="networkidle")
            docs.wait_for_selector("h1", timeout=30_000)
            expect(docs.locator("h1").first).to_contain_text("cxrq API")
            assert docs.evaluate("window.__csp") == []
            assert docs.request.get(f"{server.url}/favicon.ico").status == 200

            assert page.evaluate("window.__csp") == []
            assert errors == [], errors
            assert outside == [], outside
            assert asked_outside == [], asked_outside
        finally:
            context.close()
            browser.close()
