"""DELETE /api/v1/jobs/{id} and the retention purge: what goes, what stays as a tombstone, what is
audited, and that the same bytes can come back."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from backend.audit.models import AuditEvent
from backend.jobs.models import IdempotencyKey, Job, JobResult, JobStatus
from backend.jobs.services import deletion, operators
from backend.webhooks.models import DeliveryStatus, WebhookDelivery
from tests.factories import assert_error, claim, client_and_key, png_bytes, post_image

# transaction=True: files are deleted once the deletion commits (on_commit), as in production.
pytestmark = pytest.mark.django_db(transaction=True)


def _delete(api, job_id):
    return api.delete(f"/api/v1/jobs/{job_id}")


def test_deleting_a_succeeded_job_removes_its_image_and_result_and_keeps_a_tombstone(
    api, worker, media_files
):
    job = post_image(api, png_bytes(seed=1), fields={"callback_url": "http://127.0.0.1:9/hook"}).json()
    worker.drain()
    assert len(media_files()) == 1 and JobResult.objects.count() == 1
    delivery = WebhookDelivery.objects.get(job_id=job["id"])

    response = _delete(api, job["id"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "deleted" and body["result"] is None
    assert body["deleted_at"] and body["image_deleted_at"] and body["acquisition"] == {}
    assert media_files() == [] and not JobResult.objects.exists()
    # The webhook that was to carry the result will not: its payload is gone, it is over.
    delivery.refresh_from_db()
    assert delivery.payload is None and delivery.status == DeliveryStatus.GAVE_UP
    assert delivery.last_error == "job_deleted"
    # The tombstone answers; deleting again is harmless; the audit log has it.
    assert api.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "deleted"
    assert _delete(api, job["id"]).status_code == 200
    assert AuditEvent.objects.filter(action="job.deleted", job_id=job["id"]).count() == 2
    # The same bytes are analysed afresh.
    again = post_image(api, png_bytes(seed=1))
    assert again.status_code == 202 and again.json()["id"] != job["id"]
    assert again.json()["deduplicated"] is False


def test_a_queued_job_deleted_is_never_inferred(api, worker, media_files):
    job = post_image(api, png_bytes(seed=2)).json()
    assert _delete(api, job["id"]).json()["status"] == "deleted"
    worker.drain()
    assert Job.objects.get(pk=job["id"]).status == JobStatus.DELETED
    assert not JobResult.objects.exists() and media_files() == []


def test_a_job_being_analysed_is_409_and_kept(api, media_files):
    job = post_image(api, png_bytes(seed=3)).json()
    claim(1)
    refused = _delete(api, job["id"])
    assert_error(refused, 409, "job_in_progress")
    assert refused.json()["error"]["details"] == {"status": "in_progress"}
    assert Job.objects.get(pk=job["id"]).status == JobStatus.IN_PROGRESS and len(media_files()) == 1


def test_another_clients_job_is_404_like_an_unknown_one_and_a_read_key_may_not_delete(api, anonymous_api):
    from backend.clients import services
    from tests.factories import default_client

    job = post_image(api, png_bytes(seed=4)).json()
    _, key = client_and_key(name="hospital-b")
    theirs = anonymous_api.delete(f"/api/v1/jobs/{job['id']}", HTTP_AUTHORIZATION=f"Api-Key {key}")
    unknown = anonymous_api.delete(
        "/api/v1/jobs/7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11", HTTP_AUTHORIZATION=f"Api-Key {key}"
    )
    assert theirs.status_code == unknown.status_code == 404 and theirs.content == unknown.content
    read = services.api_key_create(client=default_client(), name="ro", scope="read").key
    assert_error(
        anonymous_api.delete(f"/api/v1/jobs/{job['id']}", HTTP_AUTHORIZATION=f"Api-Key {read}"),
        403,
        "insufficient_scope",
    )
    assert Job.objects.get(pk=job["id"]).status == JobStatus.QUEUED


def test_a_deleted_jobs_idempotency_key_is_free_again(api):
    first = post_image(api, png_bytes(seed=5), HTTP_IDEMPOTENCY_KEY="order-17").json()
    _delete(api, first["id"])
    assert not IdempotencyKey.objects.exists()
    second = post_image(api, png_bytes(seed=5), HTTP_IDEMPOTENCY_KEY="order-17")
    assert second.status_code == 202 and second.json()["id"] != first["id"]


def _ended_days_ago(job_id: str, days: float) -> None:
    Job.objects.filter(id=job_id).update(finished_at=timezone.now() - timedelta(days=days))


def test_the_purge_deletes_images_then_results_by_each_clients_window_and_audits_it(
    api, anonymous_api, worker, media_files, settings
):
    settings.IMAGE_RETENTION_DAYS, settings.RESULT_RETENTION_DAYS = 30, 365
    old, recent, ancient = (post_image(api, png_bytes(seed=s)).json()["id"] for s in (10, 11, 12))
    worker.drain()
    # Another client keeps images for 1 day only.
    other, key = client_and_key(name="hospital-b")
    other.image_retention_days = 1
    other.save()
    theirs = post_image(anonymous_api, png_bytes(seed=14), HTTP_AUTHORIZATION=f"Api-Key {key}").json()["id"]
    worker.drain()
    waiting = post_image(api, png_bytes(seed=13)).json()["id"]  # queued: never purged
    _ended_days_ago(old, 40)
    _ended_days_ago(recent, 5)
    _ended_days_ago(ancient, 400)
    _ended_days_ago(theirs, 2)
    assert len(media_files()) == 5

    out = StringIO()
    call_command("purge_expired", stdout=out)
    assert out.getvalue().strip() == "images_deleted=2 jobs_deleted=1"

    status = dict(Job.objects.values_list("id", "status"))
    assert {str(k): v for k, v in status.items()} == {
        old: JobStatus.SUCCEEDED,
        recent: JobStatus.SUCCEEDED,
        ancient: JobStatus.DELETED,
        waiting: JobStatus.QUEUED,
        theirs: JobStatus.SUCCEEDED,
    }
    # The image of `old` (40 > 30 days) and of `theirs` (2 > 1) went; their results stay, and
    # still answer a second upload of the same bytes without inference.
    assert Job.objects.get(id=old).image_deleted_at and Job.objects.get(id=theirs).image_deleted_at
    assert Job.objects.get(id=recent).image_deleted_at is None
    assert len(media_files()) == 2  # recent's and waiting's
    assert (
        JobResult.objects.filter(job_id=old).exists()
        and not JobResult.objects.filter(job_id=ancient).exists()
    )
    cached = post_image(api, png_bytes(seed=10))
    assert cached.status_code == 200 and cached.json()["id"] == old and cached.json()["result"]
    # Audited, per job, as the system's doing for that client.
    purged = AuditEvent.objects.filter(action="job.image_purged")
    assert {str(e.job_id) for e in purged} == {old, theirs}
    assert {e.actor for e in purged} == {"system"}
    assert AuditEvent.objects.get(action="job.expired").job_id.hex == ancient.replace("-", "")
    # A second run finds nothing more; an image-less failed job is not requeued by an operator.
    assert deletion.purge_expired().as_dict() == {"images_deleted": 0, "jobs_deleted": 0}
    Job.objects.filter(id=old).update(status=JobStatus.FAILED)
    assert operators.job_requeue(job_ids=[old], statuses=(JobStatus.FAILED,)) == []


def test_zero_days_keeps_for_good(api, worker, media_files, settings):
    settings.IMAGE_RETENTION_DAYS = settings.RESULT_RETENTION_DAYS = 0
    job = post_image(api, png_bytes(seed=20)).json()["id"]
    worker.drain()
    _ended_days_ago(job, 10_000)
    assert deletion.purge_expired().as_dict() == {"images_deleted": 0, "jobs_deleted": 0}
    assert len(media_files()) == 1
