"""The client reference (backend/jobs/reference.py): accepted on uploads and batches, checked,
sealed at rest, filtered by its keyed hash, shown only to its client, never logged, gone on delete."""

from __future__ import annotations

import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from backend.audit.models import AuditEvent
from backend.jobs.models import Job
from tests.factories import assert_error, client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db

MARKER = "QXREF-4711/ward#3"


def _batch(api, images: list[bytes], references: list[str] | None = None):
    form: dict = {"images": [SimpleUploadedFile(f"{i}.png", data) for i, data in enumerate(images)]}
    if references is not None:
        form["reference"] = references
    return api.post("/api/v1/batches", form, format="multipart")


def test_a_reference_is_kept_shown_and_sealed_at_rest(api, caplog):
    caplog.set_level(logging.DEBUG)
    response = post_image(api, png_bytes(seed=1), fields={"reference": MARKER})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["reference"] == MARKER
    assert api.get(body["url"]).json()["reference"] == MARKER
    listed = api.get("/api/v1/jobs").json()["results"]
    assert [j["reference"] for j in listed] == [MARKER]

    # At rest: neither the text nor its bytes are in the row (sealed, and hashed for the filter).
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM jobs_job WHERE id = %s", [body["id"]])
        row = repr(cursor.fetchall())
    assert MARKER not in row and MARKER.encode().hex() not in row
    # Never logged, never in audit details.
    assert MARKER not in caplog.text
    assert not [e for e in AuditEvent.objects.all() if MARKER in repr(e.details)]


def test_no_reference_is_null(api):
    body = post_image(api, png_bytes(seed=2)).json()
    assert body["reference"] is None
    assert post_image(api, png_bytes(seed=3), fields={"reference": ""}).json()["reference"] is None


@pytest.mark.parametrize(
    "bad",
    [
        " leading",
        "trailing ",
        "x" * 65,
        "tab\there",
        "new\nline",
        "semi;colon",
        "quote'",
        "<script>",
        "a,b",
        "nul\x00",
    ],
)
def test_a_malformed_reference_is_400_and_makes_no_job(api, bad):
    error = assert_error(
        post_image(api, png_bytes(seed=4), fields={"reference": bad}), 400, "invalid_reference"
    )
    # The value is not echoed (it may identify a patient): its length and the rule only.
    assert error["details"] == {
        "field": "reference",
        "length": len(bad),
        "allowed": error["details"]["allowed"],
    }
    assert not Job.objects.exists()


@pytest.mark.parametrize("good", ["A", "x" * 64, "ACC 2026.04_17-3:9/1#2", "Überweisung-12", "12345"])
def test_every_allowed_character_is_accepted(api, good):
    assert post_image(api, png_bytes(seed=5), fields={"reference": good}).json()["reference"] == good


def test_a_reference_sent_twice_for_one_image_is_400(api):
    form = {"image": SimpleUploadedFile("a.png", png_bytes(seed=6)), "reference": ["one", "two"]}
    assert_error(api.post("/api/v1/jobs", form, format="multipart"), 400, "invalid_reference")


def test_the_same_bytes_again_keep_the_first_reference_and_fill_a_missing_one(api):
    first = post_image(api, png_bytes(seed=7)).json()
    assert first["reference"] is None
    again = post_image(api, png_bytes(seed=7), fields={"reference": "FIRST-1"}).json()
    assert again["id"] == first["id"] and again["deduplicated"] is True
    assert again["reference"] == "FIRST-1"
    third = post_image(api, png_bytes(seed=7), fields={"reference": "SECOND-2"}).json()
    assert third["id"] == first["id"] and third["reference"] == "FIRST-1"


def test_the_list_filters_by_exact_reference(api):
    a = post_image(api, png_bytes(seed=8), fields={"reference": "ORD-1"}).json()
    b = post_image(api, png_bytes(seed=9), fields={"reference": "ORD-1"}).json()  # not unique
    post_image(api, png_bytes(seed=10), fields={"reference": "ORD-10"})
    post_image(api, png_bytes(seed=11))
    found = api.get("/api/v1/jobs", {"reference": "ORD-1"}).json()
    assert found["count"] == 2 and {j["id"] for j in found["results"]} == {a["id"], b["id"]}
    assert api.get("/api/v1/jobs", {"reference": "ord-1"}).json()["count"] == 0  # exact
    assert api.get("/api/v1/jobs", {"reference": "ORD-1", "status": "queued"}).json()["count"] == 2
    assert_error(api.get("/api/v1/jobs", {"reference": "bad;ref"}), 400, "invalid_reference")
    assert_error(api.get("/api/v1/jobs", {"reference": ""}), 400, "invalid_reference")


def test_another_clients_reference_is_invisible(api):
    mine = post_image(api, png_bytes(seed=12), fields={"reference": "SHARED-REF"}).json()
    _, key = client_and_key("other-client")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    theirs = post_image(other, png_bytes(seed=13), fields={"reference": "SHARED-REF"}).json()
    assert api.get("/api/v1/jobs", {"reference": "SHARED-REF"}).json()["results"][0]["id"] == mine["id"]
    assert [j["id"] for j in other.get("/api/v1/jobs", {"reference": "SHARED-REF"}).json()["results"]] == [
        theirs["id"]
    ]
    assert_error(other.get(f"/api/v1/jobs/{mine['id']}"), 404, "job_not_found")
    # The same text of two clients hashes apart: one client's hash says nothing about another's.
    assert Job.objects.get(id=mine["id"]).reference_hash != Job.objects.get(id=theirs["id"]).reference_hash


def test_a_batch_takes_one_reference_per_image_in_order(api):
    response = _batch(api, [png_bytes(seed=20), png_bytes(seed=21), png_bytes(seed=22)], ["R-0", "", "R-2"])
    assert response.status_code == 201, response.content
    items = response.json()["items"]
    assert [i["job"]["reference"] for i in items] == ["R-0", None, "R-2"]
    batch = api.get(response.json()["url"]).json()
    assert [i["job"]["reference"] for i in batch["items"]] == ["R-0", None, "R-2"]


def test_a_batch_with_another_count_of_references_or_a_bad_one_is_refused_whole(api):
    error = assert_error(
        _batch(api, [png_bytes(seed=23), png_bytes(seed=24)], ["only-one"]), 400, "invalid_reference"
    )
    assert error["details"] == {"field": "reference", "references": 1, "images": 2}
    error = assert_error(
        _batch(api, [png_bytes(seed=23), png_bytes(seed=24)], ["ok", "not ok!"]), 400, "invalid_reference"
    )
    assert error["details"]["index"] == 1
    assert not Job.objects.exists()
    assert _batch(api, [png_bytes(seed=23), png_bytes(seed=24)]).status_code == 201  # none at all


def test_deleting_a_job_clears_its_reference(api):
    body = post_image(api, png_bytes(seed=30), fields={"reference": "GONE-1"}).json()
    deleted = api.delete(body["url"]).json()
    assert deleted["status"] == "deleted" and deleted["reference"] is None
    job = Job.objects.get(id=body["id"])
    assert job.reference_sealed is None and job.reference_hash == ""
    assert api.get("/api/v1/jobs", {"reference": "GONE-1"}).json()["count"] == 0


def test_a_sealed_reference_copied_onto_another_job_does_not_open(api):
    a = Job.objects.get(id=post_image(api, png_bytes(seed=31), fields={"reference": "MOVED"}).json()["id"])
    b = Job.objects.get(id=post_image(api, png_bytes(seed=32)).json()["id"])
    Job.objects.filter(id=b.id).update(reference_sealed=a.reference_sealed)
    assert api.get(f"/api/v1/jobs/{b.id}").json()["reference"] is None


def test_the_webhook_payload_at_rest_carries_no_reference(api):
    from backend.webhooks.services import payload_for

    body = post_image(api, png_bytes(seed=33), fields={"reference": MARKER}).json()
    assert MARKER not in payload_for(Job.objects.select_related("client").get(id=body["id"])).decode()
