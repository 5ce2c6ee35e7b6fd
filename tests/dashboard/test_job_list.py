"""The operator's job list (the dashboard's "All jobs", /admin/jobs/job/): each job's client
reference and its weights, `untrained` where the result came from the fallback weights."""

from __future__ import annotations

import re

import pytest

from tests.factories import png_bytes, post_image

pytestmark = pytest.mark.django_db


def _row(page: str, job_id: str) -> str:
    rows = re.findall(r"<tr[^>]*>.*?</tr>", page, flags=re.S)
    return next(r for r in rows if job_id in r)


def _cell(row: str, field: str) -> str:
    return re.search(rf'<td class="field-{field}">(.*?)</td>', row, flags=re.S).group(1)


def test_the_job_list_shows_the_reference_and_the_untrained_marker(admin_client, api, worker):
    scored = post_image(api, png_bytes(seed=1), fields={"reference": "WARD-7/ACC-1"}).json()
    waiting = post_image(api, png_bytes(seed=2)).json()
    worker.drain()
    waiting_too = post_image(api, png_bytes(seed=3), fields={"reference": "ORDER-9"}).json()

    page = admin_client.get("/admin/jobs/job/").content.decode()
    assert "column-reference_shown" in page and "column-weights" in page
    row = _row(page, scored["id"])
    assert _cell(row, "reference_shown") == "WARD-7/ACC-1" and _cell(row, "weights") == "untrained"
    row = _row(page, waiting["id"])  # scored by the same drain, no reference
    assert _cell(row, "reference_shown") == "—" and _cell(row, "weights") == "untrained"
    row = _row(page, waiting_too["id"])  # queued: no result, no weights yet
    assert _cell(row, "reference_shown") == "ORDER-9" and _cell(row, "weights") == "—"
