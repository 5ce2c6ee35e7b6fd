"""The admin job list's operator actions (requeue failed, cancel queued, purge image) and its filters:
each action needs jobs.operate_job and writes an audit event naming the admin user."""

from __future__ import annotations

import pytest

from backend.audit.models import AuditEvent
from backend.jobs.models import Job, JobResult, JobStatus
from backend.jobs.services import deletion
from tests.dashboard.test_views import damage, staff
from tests.factories import png_bytes, post_image

pytestmark = pytest.mark.django_db

LIST = "/admin/jobs/job/"


def act(client, action: str, ids: list[str]):
    return client.post(LIST, {"action": action, "_selected_action": ids}, follow=True)


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_cancel_queued_cancels_only_queued_jobs_and_is_audited(client, api, worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    ran = post_image(api, png_bytes(seed=1)).json()["id"]
    worker.drain()
    queued = [post_image(api, png_bytes(seed=s)).json()["id"] for s in (2, 3)]

    viewer = staff(client, "viewer", "job viewers")
    act(viewer, "cancel_queued_selected", [ran, *queued])
    assert set(Job.objects.filter(id__in=queued).values_list("status", flat=True)) == {JobStatus.QUEUED}
    assert events("job.cancelled_by_operator") == []
    viewer.logout()

    operator = staff(client, "operator", "job operators")
    page = act(operator, "cancel_queued_selected", [ran, *queued])
    assert "Cancelled 2 of 3 jobs" in page.content.decode()
    for job in Job.objects.filter(id__in=queued):
        assert job.status == JobStatus.CANCELLED and job.error_code == "cancelled"
        assert job.finished_at is not None and "operator" in job.error_message
    assert Job.objects.get(id=ran).status == JobStatus.SUCCEEDED
    # The client sees it cancelled, as after its own cancel.
    assert api.get(f"/api/v1/jobs/{queued[0]}").json()["status"] == "cancelled"

    logged = events("job.cancelled_by_operator")
    assert sorted(str(e.job_id) for e in logged) == sorted(queued)
    assert {(e.actor, e.user) for e in logged} == {("admin", "operator")}
    assert logged[0].details == {"cancelled": 2, "selected": 3}

    # Nothing left to cancel: the attempt is still on record, without a job.
    act(operator, "cancel_queued_selected", queued)
    last = events("job.cancelled_by_operator")[-1]
    assert last.job_id is None and last.details == {"cancelled": 0, "selected": 2}


def test_purge_image_deletes_the_file_keeps_the_result_and_is_audited(
    client, api, worker, settings, media_files, django_capture_on_commit_callbacks
):
    settings.BATCH_MAX_WAIT_MS = 0
    done = post_image(api, png_bytes(seed=1)).json()["id"]
    worker.drain()
    queued = post_image(api, png_bytes(seed=2)).json()["id"]
    assert len(media_files()) == 2

    viewer = staff(client, "viewer", "job viewers")
    assert "purge_image_selected" not in viewer.get(LIST).content.decode()
    act(viewer, "purge_image_selected", [done])
    assert Job.objects.get(id=done).image_deleted_at is None and len(media_files()) == 2
    viewer.logout()

    operator = staff(client, "operator", "job operators")
    assert "purge_image_selected" in operator.get(LIST).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        page = act(operator, "purge_image_selected", [done, queued])
    assert "Purged the stored image of 1 of 2 jobs" in page.content.decode()
    job = Job.objects.get(id=done)
    assert job.image_deleted_at is not None and job.upload.name == ""
    assert job.status == JobStatus.SUCCEEDED and JobResult.objects.filter(job_id=done).exists()
    (left,) = media_files()  # the queued job's image stays: it has yet to be analysed
    assert Job.objects.get(id=queued).upload.name.endswith(left.name)
    # The result still answers, and the same bytes are still a cache hit.
    assert api.get(f"/api/v1/jobs/{done}").json()["result"]["probabilities"]
    assert post_image(api, png_bytes(seed=1)).json()["deduplicated"] is True

    (logged,) = events("job.image_purged")
    assert (str(logged.job_id), logged.actor, logged.user) == (done, "admin", "operator")
    assert logged.details == {"purged": 1, "selected": 2, "via": "admin"}
    # Purging again finds nothing to delete.
    assert deletion.images_delete([job.id]) == []


def test_requeue_failed_is_audited_and_needs_the_permission(client, api, worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    failed = post_image(api, png_bytes(seed=50)).json()["id"]
    damage(failed)
    worker.drain()
    assert Job.objects.get(id=failed).status == JobStatus.FAILED

    viewer = staff(client, "viewer", "job viewers")
    act(viewer, "requeue_selected", [failed])
    assert Job.objects.get(id=failed).status == JobStatus.FAILED and events("job.requeued") == []
    viewer.logout()

    operator = staff(client, "operator", "job operators")
    act(operator, "requeue_selected", [failed])
    job = Job.objects.get(id=failed)
    assert job.status == JobStatus.QUEUED and job.error_code == "" and job.attempts == 0
    (logged,) = events("job.requeued")
    assert (str(logged.job_id), logged.actor, logged.user) == (failed, "admin", "operator")
    assert logged.details == {"requeued": 1, "selected": 1}


def test_the_list_filters_by_priority_and_error_code(admin_client, api, worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    failed = post_image(api, png_bytes(seed=50)).json()["id"]
    damage(failed)
    ok = post_image(api, png_bytes(seed=1)).json()["id"]
    worker.drain()
    stat = post_image(api, png_bytes(seed=2), fields={"priority": "stat"}).json()["id"]

    page = admin_client.get(LIST).content.decode()
    assert "By priority" in page and "By error code" in page
    by_priority = admin_client.get(LIST, {"priority__exact": "0"}).content.decode()
    assert stat in by_priority and ok not in by_priority and failed not in by_priority
    by_code = admin_client.get(LIST, {"error_code": "decode_failed"}).content.decode()
    assert failed in by_code and ok not in by_code and stat not in by_code
