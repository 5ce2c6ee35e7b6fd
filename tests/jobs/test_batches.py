"""POST /api/v1/batches and GET /api/v1/batches/{id}: one outcome per image, partial failure per
image, counts, scoping, rates per image. (Waiting on a batch through the real server:
tests/edge/test_waiting.py.)"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.jobs.models import Job, JobStatus, UploadBatch
from tests.factories import assert_error, client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db


def _post_batch(api, files: list[tuple[str, bytes]], **fields):
    form = {"images": [SimpleUploadedFile(name, data) for name, data in files], **fields}
    return api.post("/api/v1/batches", form, format="multipart")


def test_each_image_has_its_own_outcome_and_valid_ones_become_jobs(api, worker):
    earlier = post_image(api, png_bytes(seed=3)).json()
    response = _post_batch(
        api,
        [
            ("a.png", png_bytes(seed=1)),
            ("bad.png", b"not an image at all"),
            ("b.png", png_bytes(seed=2)),
            ("again.png", png_bytes(seed=3)),
            ("tiny.png", png_bytes(size=(16, 16), seed=4)),
        ],
        priority="stat",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"] == body["url"] and body["url"].endswith(f"/api/v1/batches/{body['id']}")
    items = body["items"]
    assert [i["index"] for i in items] == [0, 1, 2, 3, 4]
    assert [(i["job"] or {}).get("status") for i in items] == ["queued", None, "queued", "queued", None]
    assert [(i["error"] or {}).get("code") for i in items] == [
        None,
        "unsupported_media_type",
        None,
        None,
        "image_too_small",
    ]
    assert items[1]["error"]["status"] == 415
    assert items[3]["deduplicated"] is True and items[3]["job"]["id"] == earlier["id"]
    assert {i["job"]["priority"] for i in items if i["job"] and not i["deduplicated"]} == {"stat"}
    assert body["counts"] == {
        "queued": 3,
        "in_progress": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "deleted": 0,
        "rejected": 2,
        "total": 5,
    }
    assert body["done"] is False
    assert Job.objects.count() == 3  # two new, one from before

    worker.drain()
    shown = api.get(body["url"]).json()
    assert shown["done"] is True and shown["counts"]["succeeded"] == 3
    assert all(i["job"]["result"]["probabilities"] for i in shown["items"] if i["job"])
    # ETag: unchanged -> 304.
    etag = api.get(body["url"])["ETag"]
    assert api.get(body["url"], HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_the_same_batch_sent_again_makes_no_new_job(api):
    files = [("a.png", png_bytes(seed=10)), ("b.png", png_bytes(seed=11))]
    first = _post_batch(api, files).json()
    second = _post_batch(api, files).json()
    assert first["id"] != second["id"]
    assert [i["job"]["id"] for i in first["items"]] == [i["job"]["id"] for i in second["items"]]
    assert all(i["deduplicated"] for i in second["items"]) and Job.objects.count() == 2


def test_what_concerns_the_whole_request_refuses_all_of_it(api, settings, media_files):
    settings.BATCH_MAX_IMAGES = 2
    assert_error(api.post("/api/v1/batches", {}, format="multipart"), 400, "missing_images")
    assert_error(
        _post_batch(api, [(f"{i}.png", png_bytes(seed=i)) for i in range(3)]), 400, "too_many_images"
    )
    assert_error(_post_batch(api, [("a.png", png_bytes())], priority="urgent"), 400, "invalid_priority")
    assert_error(
        _post_batch(api, [("a.png", png_bytes())], callback_url="http://10.9.9.9/x"),
        400,
        "callback_url_not_allowed",
    )
    assert not Job.objects.exists() and not UploadBatch.objects.exists() and media_files() == []


def test_another_clients_batch_is_404_like_an_unknown_one(api, anonymous_api):
    batch = _post_batch(api, [("a.png", png_bytes())]).json()
    _, key = client_and_key(name="hospital-b")
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    theirs = anonymous_api.get(f"/api/v1/batches/{batch['id']}", **auth)
    unknown = anonymous_api.get("/api/v1/batches/7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11", **auth)
    malformed = anonymous_api.get("/api/v1/batches/nope", **auth)
    assert theirs.status_code == unknown.status_code == malformed.status_code == 404
    assert theirs.content == unknown.content
    assert_error(theirs, 404, "batch_not_found")


def test_each_image_counts_against_the_upload_rate(api):
    client, _ = client_and_key()
    client.upload_rate = "3/min"
    client.save()
    assert _post_batch(api, [("a.png", png_bytes(seed=1)), ("b.png", png_bytes(seed=2))]).status_code == 201
    refused = _post_batch(api, [("c.png", png_bytes(seed=3)), ("d.png", png_bytes(seed=4))])
    assert_error(refused, 429, "rate_limited")
    assert refused["Retry-After"]
    assert Job.objects.count() == 2


def test_a_callback_url_applies_to_every_job(api):
    batch = _post_batch(
        api, [("a.png", png_bytes(seed=1)), ("b.png", png_bytes(seed=2))], callback_url="http://127.0.0.1:9/h"
    ).json()
    assert batch["callback_url"] == "http://127.0.0.1:9/h"
    assert set(Job.objects.values_list("callback_url", flat=True)) == {"http://127.0.0.1:9/h"}
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.QUEUED}
