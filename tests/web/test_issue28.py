"""The web client's part of issue 28, without a browser: a reference per upload (checked by the
API's rules, shown in the list, as the job page's heading and in the downloads), the wait in honest
words (no worker running, else the jobs ahead and the estimate), delete only after a confirmation
and one message after, the untrained marker in the list, and the list's row as a fragment for the
page's script (tests/web/test_browser.py drives all of it in Chromium)."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from backend.clients import services as clients
from backend.clients.models import Scope
from backend.jobs.models import Job, JobStatus, WorkerHeartbeat
from backend.jobs.services import intake
from backend.web import selectors
from tests.factories import client_and_key, png_bytes, sample_bytes

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}
NO_WORKER = "No worker is running: this job will start when one does"


def upload(browser, data: bytes, reference: str | None, name: str = "chest.png"):
    fields = {"images": SimpleUploadedFile(name, data), "priority": "routine"}
    if reference is not None:
        fields["reference"] = reference
    return browser.post("/uploads", fields, **JSON)


def text(response) -> str:
    return response.content.decode()


def heading(html: str) -> str:
    found = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.S)
    assert found, html
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


# --- references -------------------------------------------------------------------------------


def test_an_upload_keeps_its_reference_and_shows_it_in_the_list_heading_and_row(signed_in, web_client_row):
    response = upload(signed_in, png_bytes(seed=2801), "ACC-2026/0042 #1")
    assert response.status_code == 202, text(response)
    state = response.json()["job"]
    assert state["reference"] == "ACC-2026/0042 #1"
    job = Job.objects.get(id=state["id"])
    assert job.reference == "ACC-2026/0042 #1"

    home = text(signed_in.get("/"))
    row = re.search(rf'<tr data-job-row="{job.id}".*?</tr>', home, re.S).group(0)
    assert ">ACC-2026/0042 #1</a>" in row
    assert job.created_at.strftime("%Y-%m-%d %H:%M:%S") in row and ">PNG<" in row

    page = text(signed_in.get(f"/jobs/{job.id}"))
    assert heading(page) == "Job ACC-2026/0042 #1"  # "Job " is for screen readers only
    assert re.search(rf'class="job-id muted">Job <span class="mono">{job.id}</span>', page)

    fragment = signed_in.get(state["row_url"] + "?next=/")
    assert fragment.status_code == 200
    assert text(fragment).strip().startswith(f'<tr data-job-row="{job.id}" data-watch="{job.id}">')


def test_a_job_without_reference_is_named_by_its_short_id(signed_in, web_client_row):
    state = upload(signed_in, png_bytes(seed=2802), "").json()["job"]
    assert state["reference"] is None
    home = text(signed_in.get("/"))
    assert f'No reference</span> <span class="mono">{state["id"][:8]}</span>' in home
    assert heading(text(signed_in.get(state["url"]))) == f"Job {state['id']}"


@pytest.mark.parametrize(
    "reference",
    ["x" * 65, " ACC-LEAD", "ACC-TRAIL ", "semi;colon", "new\nline", "tab\there", "quote'"],
)
def test_a_malformed_reference_is_refused_by_the_apis_rules_and_nothing_is_stored(
    signed_in, web_client_row, reference
):
    response = upload(signed_in, png_bytes(seed=2803), reference)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_reference"
    assert reference not in text(response)  # never echoed: it may identify a patient
    assert not Job.objects.filter(client=web_client_row).exists()


def test_the_form_without_script_takes_one_reference_for_one_file_and_refuses_one_for_several(
    signed_in, web_client_row
):
    one = signed_in.post(
        "/uploads", {"images": [SimpleUploadedFile("a.png", png_bytes(seed=2804))], "reference": "ORD 7"}
    )
    assert one.status_code == 302
    assert [j.reference for j in Job.objects.filter(client=web_client_row)] == ["ORD 7"]

    files = [SimpleUploadedFile(f"{i}.png", png_bytes(seed=2805 + i)) for i in range(2)]
    several = signed_in.post("/uploads", {"images": files, "reference": "ORD 8"}, follow=True)
    assert "Give one reference per image" in text(several)
    assert Job.objects.filter(client=web_client_row).count() == 1

    files = [SimpleUploadedFile(f"{i}.png", png_bytes(seed=2807 + i)) for i in range(2)]
    signed_in.post("/uploads", {"images": files, "reference": ""})
    assert Job.objects.filter(client=web_client_row).count() == 3


def test_the_reference_is_in_both_downloads_and_the_untrained_marker_in_the_list(
    signed_in, web_client_row, worker
):
    state = upload(signed_in, sample_bytes("00000001_000.png"), "RIS:99").json()["job"]
    worker.drain()
    rows = list(csv.DictReader(io.StringIO(text(signed_in.get(f"/jobs/{state['id']}/result.csv")))))
    assert rows and {r["reference"] for r in rows} == {"RIS:99"}
    assert signed_in.get(f"/jobs/{state['id']}/result.json").json()["reference"] == "RIS:99"

    # The page's table of values puts each probability beside the operating point of its own scale,
    # and its raw pair is the CSV's.
    page = text(signed_in.get(state["url"]))
    for r in rows:
        name = r["finding"].replace("_", " ")
        cells = re.search(rf"<tr><th scope=\"row\">{name}</th>(.*?)</tr>", page).group(1)
        past, _, point, raw, raw_point = re.findall(r"<td>(.*?)</td>", cells)
        assert point == "0.5" and past == ("Yes" if r["positive"] == "true" else "No")
        assert float(raw) == pytest.approx(float(r["probability"]), abs=6e-5)
        assert float(raw_point) == pytest.approx(float(r["operating_point"]), abs=6e-5)

    home = text(signed_in.get("/"))
    row = re.search(rf'<tr data-job-row="{state["id"]}".*?</tr>', home, re.S).group(0)
    assert re.search(r"\d+\.\d% · <span class=\"untrained-mark\">untrained weights</span>", row), row
    fragment = text(signed_in.get(f"{state['row_url']}?next=/"))
    assert "untrained weights" in fragment and "data-watch" not in fragment  # it has ended


def test_a_row_of_another_clients_job_is_not_found(signed_in):
    other, _ = client_and_key(name="elsewhere")
    job = intake.job_create(client=other, upload=SimpleUploadedFile("o.png", png_bytes(seed=2810))).job
    response = signed_in.get(f"/jobs/{job.id}/row")
    assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"


# --- the wait in words --------------------------------------------------------------------------


def beat(worker_id: str, model_version: str, images_per_second: float | None, age_s: float = 0) -> None:
    now = timezone.now() - timedelta(seconds=age_s)
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={
            "hostname": "h",
            "pid": 1,
            "model_version": model_version,
            "info": {} if images_per_second is None else {"images_per_second": images_per_second},
            "started_at": now,
            "last_seen_at": now,
        },
    )


def test_the_wait_says_no_worker_is_running_then_the_estimate_once_one_is(signed_in, web_client_row):
    # No worker at the start, whatever an earlier test's real worker left in the shared database
    # (its last heartbeat row may be seconds old, and so still live).
    WorkerHeartbeat.objects.all().delete()
    first = upload(signed_in, png_bytes(seed=2820), None).json()["job"]
    second = upload(signed_in, png_bytes(seed=2821), None).json()["job"]
    assert second["queue"]["state"] == "no_worker" and second["waiting_text"] == NO_WORKER
    assert NO_WORKER in text(signed_in.get(second["url"]))

    watched = signed_in.get(f"/watch?ids={first['id']},{second['id']}")
    etag = watched["ETag"]
    assert (
        signed_in.get(f"/watch?ids={first['id']},{second['id']}", HTTP_IF_NONE_MATCH=etag).status_code == 304
    )

    model_version = Job.objects.get(id=second["id"]).model_version
    beat("w1", model_version, 0.5)
    changed = signed_in.get(f"/watch?ids={first['id']},{second['id']}", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200  # the page updates: the worker's arrival changes the answer
    states = {s["id"]: s for s in changed.json()["jobs"]}
    # The estimate is the API's (its formula is tested with it); the page words it.
    for job, ahead in ((first, "0 jobs ahead"), (second, "1 job ahead")):
        queue = states[job["id"]]["queue"]
        assert queue["state"] == "waiting" and queue["eta_seconds"] is not None
        words = f"{ahead}, done in about {selectors.duration_text(queue['eta_seconds'])}"
        assert states[job["id"]]["waiting_text"] == words
    assert states[second["id"]]["waiting_text"] in text(signed_in.get(second["url"]))


@pytest.mark.parametrize(
    ("queue", "words"),
    [
        (None, ""),
        ({"jobs_ahead": 3, "state": "no_worker", "eta_seconds": None}, NO_WORKER),
        ({"jobs_ahead": 0, "state": "waiting", "eta_seconds": 0.4}, "0 jobs ahead, done in about 0 s"),
        ({"jobs_ahead": 1, "state": "waiting", "eta_seconds": 59.4}, "1 job ahead, done in about 59 s"),
        ({"jobs_ahead": 7, "state": "waiting", "eta_seconds": 150}, "7 jobs ahead, done in about 2 min"),
        (
            {"jobs_ahead": 900, "state": "waiting", "eta_seconds": 3900},
            "900 jobs ahead, done in about 1 h 5 min",
        ),
        ({"jobs_ahead": 900, "state": "waiting", "eta_seconds": 7200}, "900 jobs ahead, done in about 2 h"),
        ({"jobs_ahead": 2, "state": "waiting", "eta_seconds": None}, "2 jobs ahead"),
    ],
)
def test_waiting_text(queue, words):
    assert selectors.waiting_text(queue) == words


# --- delete asks first ------------------------------------------------------------------------------


def test_delete_asks_first_without_script_and_says_it_once_after(signed_in, web_client_row):
    job = upload(signed_in, png_bytes(seed=2830), "DEL-1").json()["job"]
    asked = signed_in.get(f"/jobs/{job['id']}/delete?next=/jobs/{job['id']}")
    html = text(asked)
    assert asked.status_code == 200 and heading(html) == "Delete this job?"
    assert "The job DEL-1" in html and 'name="confirm" value="yes"' in html
    assert f'href="/jobs/{job["id"]}">Keep it</a>' in html
    assert Job.objects.get(id=job["id"]).status == JobStatus.QUEUED

    # A POST without the confirmation (an old page's form) only asks too.
    again = signed_in.post(f"/jobs/{job['id']}/delete", {"next": "/"})
    assert heading(text(again)) == "Delete this job?"
    assert Job.objects.get(id=job["id"]).status == JobStatus.QUEUED

    done = signed_in.post(
        f"/jobs/{job['id']}/delete", {"confirm": "yes", "next": f"/jobs/{job['id']}"}, follow=True
    )
    assert done.redirect_chain == [("/", 302)]  # not the job's page, which would say it again
    page = text(done)
    assert page.count("was deleted") == 1 and "The job DEL-1 was deleted" in page
    assert Job.objects.get(id=job["id"]).status == JobStatus.DELETED


def test_delete_from_the_script_needs_the_confirmation_and_answers_one_message(signed_in, web_client_row):
    job = upload(signed_in, png_bytes(seed=2831), None).json()["job"]
    refused = signed_in.post(f"/jobs/{job['id']}/delete", **JSON)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "confirmation_required"
    assert Job.objects.get(id=job["id"]).status == JobStatus.QUEUED
    done = signed_in.post(f"/jobs/{job['id']}/delete", {"confirm": "yes"}, **JSON)
    assert done.status_code == 200 and done.json()["job"]["status"] == "deleted"
    assert done.json()["message"].startswith("The job uploaded ")
    panel = text(signed_in.get(f"/jobs/{job['id']}/panel"))
    assert panel.count("was deleted") == 1


def test_every_delete_button_opens_the_confirmation_not_the_deletion(signed_in, web_client_row):
    upload(signed_in, png_bytes(seed=2832), "ASK-1")
    html = text(signed_in.get("/"))
    forms = re.findall(r'<form method="(\w+)" action="/jobs/[^"]+/delete"[^>]*>', html)
    assert forms == ["get"], forms
    assert '<dialog id="confirm-delete"' in html and "data-dialog-close autofocus" in html


def test_a_read_key_is_not_asked_to_confirm_a_delete_it_may_not_do(browser, web_client_row):
    job = intake.job_create(
        client=web_client_row, upload=SimpleUploadedFile("r.png", png_bytes(seed=2833))
    ).job
    read_key = clients.api_key_create(client=web_client_row, name="viewer", scope=Scope.READ).key
    browser.post("/sign-in", {"api_key": read_key})
    response = browser.get(f"/jobs/{job.id}/delete")
    assert response.status_code == 403 and "Delete this job?" not in text(response)
    assert '<dialog id="confirm-delete"' not in text(browser.get("/"))
