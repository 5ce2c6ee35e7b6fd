"""The dashboard in Debian's headless Chromium, served by the real web server: a staff member signs
in to the admin, follows the index's link and sees the figures drawn (the two SVG charts, a worker
row, a failure row), with nothing written to the console as an error, nothing blocked by the
Content-Security-Policy and nothing asked of any other host. Its screenshot, dashboard.png, goes to
the test's folder, or to docs/screenshots/ with CXRQ_SCREENSHOTS=docs (tests/browser.py).

Chromium is Debian's (/usr/bin/chromium, or CXRQ_CHROMIUM), never one downloaded by
`playwright install`.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.sync_api import sync_playwright

from backend.webhooks import services as webhooks
from backend.webhooks.models import WebhookDelivery
from tests.browser import CHROMIUM, needs_chromium, offline, screenshots_dir
from tests.dashboard.test_views import damage
from tests.factories import png_bytes, post_image
from tests.webhooks.receiver import Receiver

PASSWORD = "a-staff-password-for-tests"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    needs_chromium,
]


def test_a_staff_member_opens_the_dashboard_in_chromium(start_web, api, worker, settings, tmp_path):
    settings.BATCH_MAX_WAIT_MS = 0
    receiver = Receiver(script=[503]).start()
    hooked = post_image(api, png_bytes(seed=9), fields={"callback_url": receiver.url}).json()["id"]
    for seed in range(1, 9):
        post_image(api, png_bytes(seed=seed))
    post_image(api, png_bytes(seed=1))  # a cache hit
    bad = post_image(api, png_bytes(seed=50)).json()["id"]
    damage(bad)
    worker.drain()
    delivery = WebhookDelivery.objects.get(job_id=hooked)
    webhooks.attempt(str(delivery.id))  # 503: to be retried
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=delivery.created_at)
    webhooks.attempt(str(delivery.id))  # delivered
    receiver.stop()
    post_image(api, png_bytes(seed=20), fields={"priority": "stat"})
    post_image(api, png_bytes(seed=21))
    user = get_user_model().objects.create_user("operator", password=PASSWORD, is_staff=True)
    # The permissions the "job operators" group holds (a transactional test's flush removes the
    # groups the data migration made; the permissions themselves are made again after it).
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=("jobs", "webhooks")))

    server = start_web({"DJANGO_DEBUG": "false", "CXRQ_UPLOAD_RATE": "0", "CXRQ_READ_RATE": "0"})
    server.wait_ready()
    errors: list[str] = []
    outside: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
            offline(context, outside)
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))

            page.goto(f"{server.url}/admin/login/?next=/admin/", wait_until="networkidle")
            page.fill("#id_username", "operator")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{server.url}/admin/")
            page.click("text=Operator dashboard")
            page.wait_for_url(f"{server.url}/admin/dashboard/")
            page.wait_for_load_state("networkidle")

            assert page.locator("h1").inner_text() == "Operator dashboard"
            assert page.locator("svg.cxrq-chart").count() == 2
            assert page.locator('svg[data-chart="throughput"] rect.bar').count() >= 1
            assert page.locator('svg[data-chart="latency"] circle.point').count() >= 2
            assert page.locator("svg.cxrq-chart").first.bounding_box()["height"] > 100  # drawn, not empty
            assert page.locator("tr.worker-row").count() == 1
            failure = page.locator("tr.failure-row")
            assert failure.count() == 1 and "decode_failed" in failure.inner_text()
            assert failure.locator("a").get_attribute("href") == f"/admin/jobs/job/{bad}/change/"
            assert page.locator('[data-figure="cache-hit-ratio"]').inner_text() == "8 %"  # 1 of 13
            assert page.locator("tr.queue-row").count() == 2  # stat and routine, one client
            assert page.locator("tr.attempt-row").count() == 2  # the 503, then the 2xx
            refresh = page.locator('meta[http-equiv="refresh"]').get_attribute("content")
            assert refresh == "15"

            shot = screenshots_dir(tmp_path) / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            assert page.evaluate("window.__csp") == []
            assert errors == []
            assert outside == []
        finally:
            browser.close()
