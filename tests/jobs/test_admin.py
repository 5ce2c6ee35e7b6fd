"""The Django admin: job list with queue state, filters, search, read-only results, operator actions."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from backend.jobs.models import Job, JobStatus
from tests.factories import png_bytes, post_image

pytestmark = pytest.mark.django_db


def test_job_list_shows_queue_state_and_searches(admin_client, api, worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    done = post_image(api, png_bytes(seed=1)).json()
    worker.drain()
    queued = post_image(api, png_bytes(seed=2)).json()

    page = admin_client.get("/admin/jobs/job/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Queue" in html and "live workers" in html
    assert done["sha256"][:12] in html and queued["sha256"][:12] in html

    by_sha = admin_client.get("/admin/jobs/job/", {"q": done["sha256"][:20]}).content.decode()
    assert done["id"] in by_sha and queued["id"] not in by_sha
    by_id = admin_client.get("/admin/jobs/job/", {"q": queued["id"]}).content.decode()
    assert queued["id"] in by_id and done["id"] not in by_id
    filtered = admin_client.get("/admin/jobs/job/", {"status__exact": "SUCCEEDED"}).content.decode()
    assert done["id"] in filtered and queued["id"] not in filtered

    detail = admin_client.get(f"/admin/jobs/job/{done['id']}/change/").content.decode()
    assert "Atelectasis" in detail  # the result, read-only
    assert admin_client.get("/admin/jobs/job/add/").status_code == 403


def test_admin_actions_requeue_and_fail(admin_client, api):
    ids = [post_image(api, png_bytes(seed=s)).json()["id"] for s in (5, 6)]
    response = admin_client.post(
        "/admin/jobs/job/", {"action": "fail_selected", "_selected_action": ids[:1]}, follow=True
    )
    assert response.status_code == 200
    assert Job.objects.get(id=ids[0]).status == JobStatus.FAILED
    admin_client.post("/admin/jobs/job/", {"action": "requeue_selected", "_selected_action": ids[:1]})
    assert Job.objects.get(id=ids[0]).status == JobStatus.QUEUED


def _staff(client, username: str, group: str | None):
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username, password="pw-for-tests-only", is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return client


def test_viewers_look_and_operators_act(client, api):
    ids = [post_image(api, png_bytes(seed=s)).json()["id"] for s in (7, 8)]
    viewer = _staff(client, "viewer", "job viewers")
    page = viewer.get("/admin/jobs/job/")
    assert page.status_code == 200 and ids[0] in page.content.decode()
    assert "fail_selected" not in page.content.decode()  # no actions offered
    viewer.post("/admin/jobs/job/", {"action": "fail_selected", "_selected_action": ids[:1]})
    assert Job.objects.get(id=ids[0]).status == JobStatus.QUEUED  # and none taken

    viewer.logout()
    operator = _staff(client, "operator", "job operators")
    assert "fail_selected" in operator.get("/admin/jobs/job/").content.decode()
    operator.post("/admin/jobs/job/", {"action": "fail_selected", "_selected_action": ids[:1]})
    assert Job.objects.get(id=ids[0]).status == JobStatus.FAILED


def test_staff_without_a_group_and_non_staff_see_no_jobs(client):
    no_group = _staff(client, "nobody", None)
    assert no_group.get("/admin/jobs/job/").status_code == 403
    no_group.logout()
    client.force_login(get_user_model().objects.create_user("patient", password="pw-for-tests-only"))
    assert client.get("/admin/jobs/job/").status_code == 302  # to the sign-in page


def test_admin_sign_in_is_locked_out_after_repeated_failures(client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    get_user_model().objects.create_superuser("root", "r@example.org", "the-right-password")
    for _ in range(3):
        wrong = client.post(
            "/admin/login/", {"username": "root", "password": "guess"}, REMOTE_ADDR="10.1.1.1"
        )
        assert wrong.status_code in (200, 429)
    locked = client.post(
        "/admin/login/", {"username": "root", "password": "the-right-password"}, REMOTE_ADDR="10.1.1.1"
    )
    assert locked.status_code == 429  # even the right password, from that address, for a while
    assert "_auth_user_id" not in client.session


def test_the_job_list_shows_each_stored_image_as_a_small_preview(admin_client, api):
    import io

    from PIL import Image

    from backend.audit.models import AuditEvent
    from backend.audit.services import flush_reads
    from backend.jobs.services import deletion

    job_id = post_image(api, png_bytes(size=(640, 480), seed=4)).json()["id"]
    url = f"/admin/jobs/job/{job_id}/preview.png"
    assert f'src="{url}"' in admin_client.get("/admin/jobs/job/").content.decode()
    response = admin_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert max(Image.open(io.BytesIO(response.content)).size) <= 512
    flush_reads()
    assert AuditEvent.objects.filter(action="job.image_viewed", job_id=job_id).exists()
    # Not for someone who is not signed in to the admin; gone once the image is.
    from django.test import Client

    assert Client().get(url).status_code == 302
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    assert deletion.images_delete([job_id]) == [Job.objects.get(id=job_id).id]
    assert admin_client.get(url).status_code == 404
    assert f'src="{url}"' not in admin_client.get("/admin/jobs/job/").content.decode()
