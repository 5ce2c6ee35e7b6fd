"""The web client's views without a browser: signing in and out, CSRF, scoping by client, uploads
through the intake service, live status, thumbnails, downloads, cancel, delete, errors in words."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as BrowserClient
from PIL import Image

from backend.audit.models import AuditEvent
from backend.clients import services as clients
from backend.clients.models import Scope
from backend.edge.waiting import WAIT_HEADER
from backend.jobs import csv_export
from backend.jobs.model_identity import LABELS
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import intake
from backend.web import session, thresholds
from tests.factories import client_and_key, png_bytes, sample_bytes
from tests.jobs.images.factories import MONO1_SAMPLE, MONO2_SAMPLE, dicom_from, to_bytes

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


def upload(browser, data: bytes, name: str = "chest.png", priority: str = "routine", **extra):
    return browser.post(
        "/uploads", {"images": SimpleUploadedFile(name, data), "priority": priority}, **(JSON | extra)
    )


def job_for(client, data: bytes, name: str = "x.png") -> Job:
    return intake.job_create(client=client, upload=SimpleUploadedFile(name, data)).job


def page_text(response) -> str:
    return response.content.decode()


# --- signing in and out ---------------------------------------------------------------------


def test_the_home_page_asks_for_a_key_with_a_csrf_protected_form(browser):
    response = browser.get("/")
    assert response.status_code == 200
    html = page_text(response)
    assert 'name="api_key"' in html and 'type="password"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert "<script src=" in html and "<script>" not in html  # no inline script
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_signing_in_keeps_the_client_and_key_prefix_server_side_never_the_key(
    browser, web_key, web_client_row
):
    before = browser.cookies.get("sessionid")
    response = browser.post("/sign-in", {"api_key": web_key})
    assert response.status_code == 302 and response["Location"] == "/"
    cookie = browser.cookies["sessionid"]
    assert cookie["httponly"] and (before is None or before.value != cookie.value)
    stored = browser.session[session.SESSION_KEY]
    assert stored == {"client_id": str(web_client_row.id), "prefix": web_key.partition(".")[0]}
    assert web_key not in json.dumps(dict(browser.session.items()))
    home = page_text(browser.get("/"))
    assert "ward-7" in home and web_key not in home and web_key.partition(".")[2] not in home


@pytest.mark.parametrize(
    ("key", "status", "words"),
    [
        ("not-a-key", 401, "not valid"),
        ("abcd1234." + "x" * 32, 401, "not valid"),
    ],
)
def test_a_wrong_key_is_refused_in_words_and_not_echoed(browser, key, status, words):
    response = browser.post("/sign-in", {"api_key": key})
    assert response.status_code == status
    html = page_text(response)
    assert words in html and key not in html and 'aria-invalid="true"' in html
    assert session.SESSION_KEY not in browser.session


def test_an_operator_key_cannot_sign_in(browser, db):
    _, key = client_and_key(name="ops", scope=Scope.OPERATOR)
    response = browser.post("/sign-in", {"api_key": key})
    assert response.status_code == 403 and "operator key" in page_text(response)


def test_sign_in_attempts_are_limited_per_address(browser, settings, web_key):
    import uuid

    settings.WEB_SIGN_IN_RATE = "3/min"
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    for _ in range(3):
        assert browser.post("/sign-in", {"api_key": "wrong"}, REMOTE_ADDR=address).status_code == 401
    limited = browser.post("/sign-in", {"api_key": web_key}, REMOTE_ADDR=address)
    assert limited.status_code == 429 and "Too many requests" in page_text(limited)
    assert session.SESSION_KEY not in browser.session


def test_every_post_needs_the_csrf_token(web_key):
    strict = BrowserClient(enforce_csrf_checks=True)
    assert strict.post("/sign-in", {"api_key": web_key}).status_code == 403
    token = strict.get("/").cookies["csrftoken"].value
    page = page_text(strict.get("/"))
    form_token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert token
    assert strict.post("/sign-in", {"api_key": web_key, "csrfmiddlewaretoken": form_token}).status_code == 302
    # Signed in, uploads, cancels, deletes and signing out are refused without the token too.
    for path in ("/uploads", "/sign-out", f"/jobs/{'0' * 32}/cancel", f"/jobs/{'0' * 32}/delete"):
        assert strict.post(path, {}).status_code == 403, path
    assert session.SESSION_KEY in strict.session


def test_signing_out_ends_the_session(signed_in):
    response = signed_in.post("/sign-out")
    assert response.status_code == 302
    assert session.SESSION_KEY not in signed_in.session
    home = page_text(signed_in.get("/"))
    assert 'name="api_key"' in home and "You have signed out." in home
    assert signed_in.get("/watch?ids=").status_code == 401


def test_a_revoked_key_ends_the_session_on_its_next_request(signed_in, web_key, web_client_row):
    assert signed_in.get("/watch?ids=").status_code == 200
    assert clients.api_key_revoke(client=web_client_row, prefix=web_key.partition(".")[0])
    refused = signed_in.get("/watch?ids=")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "not_signed_in"
    assert session.SESSION_KEY not in signed_in.session
    assert 'name="api_key"' in page_text(signed_in.get("/"))


def test_a_revoked_key_on_a_page_goes_back_to_sign_in_with_a_reason(signed_in, web_key, web_client_row):
    clients.api_key_revoke(client=web_client_row, prefix=web_key.partition(".")[0])
    home = page_text(signed_in.get("/"))
    assert "revoked or has expired" in home and 'name="api_key"' in home


# --- uploads --------------------------------------------------------------------------------


def test_an_upload_goes_through_intake_for_the_sessions_client(signed_in, web_client_row):
    response = upload(signed_in, png_bytes(seed=11), priority="stat")
    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get(id=body["job"]["id"])
    assert (
        job.client == web_client_row
        and job.status == JobStatus.QUEUED
        and job.get_priority_display() == "stat"
    )
    assert body["job"]["queue"]["jobs_ahead"] == 0
    assert body["job"]["url"] == f"/jobs/{job.id}" and body["deduplicated"] is False
    event = AuditEvent.objects.get(action="job.created", job_id=job.id)
    assert event.actor == "web_session" and event.client_id == web_client_row.id
    again = upload(signed_in, png_bytes(seed=11))
    assert again.json()["job"]["id"] == str(job.id) and again.json()["deduplicated"] is True


def test_a_form_without_script_uploads_every_file_and_says_how_each_went(signed_in):
    files = [
        SimpleUploadedFile("a.png", png_bytes(seed=21)),
        SimpleUploadedFile("b.dcm", sample_bytes(MONO2_SAMPLE)),
        SimpleUploadedFile("notes.txt", b"not an image at all" * 10),
    ]
    response = signed_in.post("/uploads", {"images": files, "priority": "routine"}, follow=True)
    html = page_text(response)
    assert Job.objects.count() == 2
    assert "a.png: uploaded, queued." in html and "b.dcm: uploaded, queued." in html
    assert "notes.txt: The file is not an accepted image format." in html
    assert "Traceback" not in html


@pytest.mark.parametrize(
    ("data", "status", "code", "words"),
    [
        (b"plain text, no image" * 20, 415, "unsupported_media_type", "not an accepted image format"),
        (png_bytes()[:200], 400, "invalid_image", "could not be decoded"),
        (b"", 400, "empty_file", "empty"),
    ],
)
def test_a_refused_upload_says_why_in_words(signed_in, data, status, code, words):
    response = upload(signed_in, data)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    assert Job.objects.count() == 0


def test_the_upload_limit_is_in_the_page_and_enforced(signed_in, settings):
    settings.UPLOAD_MAX_BYTES = 300
    html = page_text(signed_in.get("/"))
    assert 'data-max-bytes="300"' in html and "300\xa0bytes" in html
    response = upload(signed_in, png_bytes(seed=3))
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"


def test_a_read_key_may_look_but_not_upload_cancel_or_delete(browser, web_client_row):
    key = clients.api_key_create(client=web_client_row, name="viewer", scope=Scope.READ).key
    job = job_for(web_client_row, png_bytes(seed=31))
    assert browser.post("/sign-in", {"api_key": key}).status_code == 302
    html = page_text(browser.get("/"))
    assert 'id="upload-form"' not in html and "read jobs only" in html
    refused = upload(browser, png_bytes(seed=32))
    assert refused.status_code == 403 and "submit key" in refused.json()["error"]["message"]
    assert browser.post(f"/jobs/{job.id}/cancel", **JSON).status_code == 403
    assert browser.get(f"/jobs/{job.id}").status_code == 200


# --- scoping ----------------------------------------------------------------------------------


def test_another_clients_job_is_not_found_everywhere(signed_in, db):
    other, _ = client_and_key(name="ward-9")
    theirs = job_for(other, png_bytes(seed=41))
    page = signed_in.get(f"/jobs/{theirs.id}")
    assert page.status_code == 404 and "No such job" in page_text(page)
    for path in ("panel", "thumbnail.png", "result.json", "result.csv"):
        response = signed_in.get(f"/jobs/{theirs.id}/{path}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found", path
    for action in ("cancel", "delete"):
        assert signed_in.post(f"/jobs/{theirs.id}/{action}", **JSON).status_code == 404
    assert signed_in.get(f"/watch?ids={theirs.id}").json() == {"jobs": []}
    assert str(theirs.id) not in page_text(signed_in.get("/"))
    theirs.refresh_from_db()
    assert theirs.status == JobStatus.QUEUED


def test_the_list_shows_only_the_clients_jobs_and_filters_by_status(signed_in, web_client_row, db):
    mine = [job_for(web_client_row, png_bytes(seed=s)) for s in (51, 52)]
    other, _ = client_and_key(name="ward-9")
    theirs = job_for(other, png_bytes(seed=53))
    signed_in.post(f"/jobs/{mine[0].id}/cancel")
    html = page_text(signed_in.get("/"))
    assert all(str(j.id) in html for j in mine) and str(theirs.id) not in html
    cancelled = page_text(signed_in.get("/?status=cancelled"))
    assert str(mine[0].id) in cancelled and str(mine[1].id) not in cancelled
    wrong = page_text(signed_in.get("/?status=sideways"))
    assert "Unknown status filter. Showing every status." in wrong and str(mine[1].id) in wrong


# --- live status ------------------------------------------------------------------------------


def test_watch_answers_states_and_marks_an_unchanged_answer_for_the_edge_to_hold(signed_in, web_client_row):
    jobs = [job_for(web_client_row, png_bytes(seed=s)) for s in (61, 62)]
    ids = ",".join(str(j.id) for j in jobs)
    first = signed_in.get(f"/watch?ids={ids}&wait=20")
    assert first.status_code == 200 and WAIT_HEADER not in first  # nothing known yet: answered now
    states = {s["id"]: s for s in first.json()["jobs"]}
    assert states[str(jobs[1].id)]["queue"]["jobs_ahead"] == 1
    etag = first["ETag"]
    held = signed_in.get(f"/watch?ids={ids}&wait=20", HTTP_IF_NONE_MATCH=etag)
    assert held.status_code == 200
    named, seconds = held[WAIT_HEADER].split(" ")
    assert set(named.split(",")) == set(ids.split(",")) and seconds == "20"
    assert signed_in.get(f"/watch?ids={ids}", HTTP_IF_NONE_MATCH=etag).status_code == 304
    signed_in.post(f"/jobs/{jobs[0].id}/cancel")
    changed = signed_in.get(f"/watch?ids={ids}&wait=20", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and WAIT_HEADER not in changed
    assert {s["id"]: s["status"] for s in changed.json()["jobs"]}[str(jobs[0].id)] == "cancelled"
    assert signed_in.get(f"/watch?ids={ids}&wait=999").json()["error"]["code"] == "invalid_wait"


# --- results: chart, banner, provenance, downloads ----------------------------------------------


@pytest.fixture
def succeeded(signed_in, web_client_row, worker) -> Job:
    job = job_for(web_client_row, sample_bytes("00000001_000.png"))
    worker.drain()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    return job


def test_a_result_page_has_the_sorted_chart_the_operating_point_and_the_untrained_banner(
    signed_in, succeeded
):
    html = page_text(signed_in.get(f"/jobs/{succeeded.id}"))
    assert "Untrained weights: not for clinical use" in html
    labels = [part.split('"')[0] for part in html.split('data-label="')[1:]]
    values = [float(part.split('"')[0]) for part in html.split('data-probability="')[1:]]
    assert sorted(labels) == sorted(LABELS) and len(values) == 18
    assert values == sorted(values, reverse=True)
    assert 'class="threshold" data-threshold="0.5"' in html
    for key in ("Model version", "Weights", "Backend", "Precision", "Inference per image"):
        assert key in html, key
    assert f'src="/jobs/{succeeded.id}/thumbnail.png"' in html
    assert 'style="' not in html and "<script>" not in html


def test_an_official_result_has_no_banner(signed_in, succeeded):
    result = succeeded.result
    result.provenance = result.provenance | {"weights": "official", "weights_sha256": "ab" * 32}
    result.save()
    assert "Untrained weights" not in page_text(signed_in.get(f"/jobs/{succeeded.id}"))


def test_csv_and_json_downloads(signed_in, succeeded):
    response = signed_in.get(f"/jobs/{succeeded.id}/result.csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert f'filename="cxrq-{succeeded.id}.csv"' in response["Content-Disposition"]
    # The one CSV (backend/jobs/csv_export.py): the API's result.csv gives the same bytes.
    assert response.content.decode() == csv_export.as_csv([succeeded])
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {r["finding"] for r in rows} == set(LABELS)
    atelectasis = next(r for r in rows if r["finding"] == "Atelectasis")
    assert float(atelectasis["operating_point"]) == pytest.approx(0.07422872)
    assert atelectasis["scale"] == "raw"
    assert atelectasis["positive"] == (
        "true" if float(atelectasis["probability"]) >= float(atelectasis["operating_point"]) else "false"
    )
    assert {r["weights"] for r in rows} == {"untrained"}

    body = json.loads(signed_in.get(f"/jobs/{succeeded.id}/result.json").content)
    assert body["id"] == str(succeeded.id) and body["status"] == "succeeded"
    assert set(body["result"]["probabilities"]) == set(LABELS)
    stored = body["result"]["probabilities"]["Atelectasis"]
    assert csv_export.raw_probability(stored, 0.07422872) == pytest.approx(
        float(atelectasis["probability"]), abs=2e-6
    )


def test_no_download_before_a_result(signed_in, web_client_row):
    job = job_for(web_client_row, png_bytes(seed=71))
    response = signed_in.get(f"/jobs/{job.id}/result.csv")
    assert response.status_code == 409 and response.json()["error"]["code"] == "result_not_ready"


# --- thumbnails -----------------------------------------------------------------------------------


def thumb(browser, job: Job) -> tuple[np.ndarray, object]:
    response = browser.get(f"/jobs/{job.id}/thumbnail.png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.mode == "L" and max(image.size) <= 512
    return np.asarray(image), response


def test_a_png_thumbnail_is_private_and_revalidated(signed_in, web_client_row):
    job = job_for(web_client_row, sample_bytes("00000001_000.png"))
    pixels, response = thumb(signed_in, job)
    assert pixels.shape == (512, 512) and pixels.std() > 10
    assert response["Cache-Control"] == "private, no-cache" and response["ETag"]
    again = signed_in.get(f"/jobs/{job.id}/thumbnail.png", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304 and again.content == b""
    signed_in.post("/sign-out")
    assert signed_in.get(f"/jobs/{job.id}/thumbnail.png").status_code == 401


def test_a_dicom_thumbnail_shows_monochrome1_inverted(signed_in, web_client_row):
    mono2 = job_for(web_client_row, sample_bytes(MONO2_SAMPLE), "a.dcm")
    mono1 = job_for(web_client_row, sample_bytes(MONO1_SAMPLE), "b.dcm")
    assert mono2.image_format == mono1.image_format == "DICOM"
    a, _ = thumb(signed_in, mono2)
    b, _ = thumb(signed_in, mono1)
    assert a.shape == b.shape == (512, 512) and a.std() > 10
    # The same stored pixels, MONOCHROME1: shown inverted, so the two previews are negatives.
    assert np.abs(a.astype(int) + b.astype(int) - 255).mean() < 3


def test_a_dicom_thumbnail_uses_the_files_window(signed_in, web_client_row):
    ramp = np.tile(np.linspace(0, 4095, 256).astype(np.uint16), (256, 1))
    ds = dicom_from(ramp, bits_stored=12, WindowCenter="2048", WindowWidth="1024")
    job = job_for(web_client_row, to_bytes(ds), "windowed.dcm")
    pixels, _ = thumb(signed_in, job)
    assert pixels[:, :90].max() == 0  # below the window: black
    assert pixels[:, -90:].min() == 255  # above it: white
    middle = pixels[0, 100:156]
    assert 0 < middle.min() < middle.max() < 255 and np.all(np.diff(middle.astype(int)) >= 0)


def test_a_sixteen_bit_png_is_stretched_to_its_percentiles(signed_in, web_client_row):
    ramp = (np.tile(np.linspace(1000, 3000, 256), (128, 1))).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    job = job_for(web_client_row, buf.getvalue(), "sixteen.png")
    pixels, _ = thumb(signed_in, job)
    assert pixels.min() == 0 and pixels.max() == 255


def test_no_thumbnail_once_the_job_is_deleted(signed_in, web_client_row):
    job = job_for(web_client_row, png_bytes(seed=81))
    response = signed_in.post(f"/jobs/{job.id}/delete", {"confirm": "yes"}, follow=True)
    assert "was deleted: its image and result are gone" in page_text(response)
    gone = signed_in.get(f"/jobs/{job.id}/thumbnail.png")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_not_available"
    assert "its image and result are gone" in page_text(signed_in.get(f"/jobs/{job.id}"))


# --- cancel and delete ------------------------------------------------------------------------------


def test_cancel_a_queued_job_then_cancelling_again_is_harmless_and_an_ended_job_is_refused(
    signed_in, web_client_row, worker
):
    job = job_for(web_client_row, png_bytes(seed=91))
    response = signed_in.post(f"/jobs/{job.id}/cancel", **JSON)
    assert response.status_code == 200 and response.json()["job"]["status"] == "cancelled"
    assert "will not be analysed" in response.json()["message"]
    done = job_for(web_client_row, png_bytes(seed=92))
    worker.drain()
    refused = signed_in.post(f"/jobs/{done.id}/cancel", {"next": f"/jobs/{done.id}"}, follow=True)
    html = page_text(refused)
    assert "The job has already ended" in html and "Traceback" not in html
    assert refused.redirect_chain[-1][0] == f"/jobs/{done.id}"


def test_next_never_redirects_off_site(signed_in, web_client_row):
    job = job_for(web_client_row, png_bytes(seed=93))
    response = signed_in.post(f"/jobs/{job.id}/cancel", {"next": "https://evil.example/"})
    assert response["Location"] == "/"


# --- operating points -------------------------------------------------------------------------------


def test_operating_points_come_from_the_installed_torchxrayvision_source():
    points = thresholds.operating_points()
    assert tuple(points) == LABELS
    assert points["Atelectasis"] == pytest.approx(0.07422872)
    assert points["Lung Opacity"] == pytest.approx(0.20204692)
    assert thresholds.source_path().name == "models.py"


def test_operating_points_parse_nan_and_aliases():
    source = (
        "import numpy as np\nmodel_urls = {}\n"
        "model_urls['a'] = {'labels': ['x', 'y'], 'op_threshs': [0.25, np.nan]}\n"
        "model_urls['b'] = model_urls['a']\n"
    )
    parsed = thresholds.parse_model_urls(source)
    assert parsed["b"]["labels"] == ["x", "y"]
    assert parsed["b"]["op_threshs"][0] == 0.25 and np.isnan(parsed["b"]["op_threshs"][1])


def test_the_web_process_never_imports_torch():
    import subprocess
    import sys

    from tests.factories import ROOT

    code = (
        "import sys, django; django.setup(); "
        "import backend.urls, backend.web.views; "
        "from backend.web.thresholds import operating_points; assert operating_points(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"DJANGO_SETTINGS_MODULE": "backend.settings.test", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_panel_fragment_of_a_succeeded_job_has_its_result(signed_in, succeeded):
    response = signed_in.get(f"/jobs/{succeeded.id}/panel")
    assert response.status_code == 200
    html = page_text(response)
    assert "Untrained weights: not for clinical use" in html and html.count('class="bar-row') == 18
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
