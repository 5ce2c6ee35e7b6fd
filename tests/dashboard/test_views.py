"""The operator dashboard at /admin/dashboard/: figures computed from jobs made through the API and
run by a worker, and who may see it."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from backend.jobs.models import Job, WorkerHeartbeat
from backend.webhooks import services as webhooks
from backend.webhooks.models import DeliveryStatus, WebhookDelivery
from tests.factories import png_bytes, post_image
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db

URL = "/admin/dashboard/"


def damage(job_id: str) -> None:
    """The stored file broken after it was accepted: the worker fails the job (decode_failed)."""
    job = Job.objects.get(id=job_id)
    with job.upload.storage.open(job.upload.name, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n broken")


def staff(client, username: str, group: str | None):
    user = get_user_model().objects.create_user(username, password="pw-for-tests-only", is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return client


def test_staff_see_figures_computed_from_real_jobs(admin_client, api, worker, settings):
    settings.BATCH_MAX_WAIT_MS = 0
    receiver = Receiver(script=[500]).start()
    try:
        hooked = post_image(api, png_bytes(seed=1), fields={"callback_url": receiver.url}).json()
        done = [post_image(api, png_bytes(seed=s)).json()["id"] for s in (2, 3)]
        again = post_image(api, png_bytes(seed=2)).json()
        assert again["deduplicated"] is True and again["id"] == done[0]
        bad = post_image(api, png_bytes(seed=50)).json()["id"]
        damage(bad)
        worker.drain()
        waiting = post_image(api, png_bytes(seed=4), fields={"priority": "stat"}).json()["id"]

        # The callback: refused once (500), then taken.
        delivery = WebhookDelivery.objects.get(job_id=hooked["id"])
        assert webhooks.attempt(str(delivery.id)) == DeliveryStatus.PENDING
        WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=delivery.created_at)
        assert webhooks.attempt(str(delivery.id)) == DeliveryStatus.DELIVERED
    finally:
        receiver.stop()

    page = admin_client.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert '<meta http-equiv="refresh" content="15">' in html
    assert "<script" not in html.split('id="content-main"')[1]  # the page's own part has no script
    figures = page.context["figures"]

    assert dict(figures["job_counts"]) == {
        "queued": 1,
        "in progress": 0,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 0,
        "deleted": 0,
    }
    (row,) = figures["queue"]["rows"]
    assert (row["client"], row["priority"], row["queued"], row["in_progress"]) == ("hospital-a", "stat", 1, 0)
    assert row["oldest_s"] is not None and row["oldest_s"] < 60
    assert figures["queue"]["by_priority"]["stat"]["queued"] == 1

    throughput = figures["throughput"]
    assert (sum(throughput["succeeded"]), sum(throughput["failed"]), throughput["total"]) == (3, 1, 4)
    assert throughput["succeeded"][-1] + throughput["succeeded"][-2] == 3  # this minute (or the one before)
    latency = figures["latency"]
    assert latency["jobs"] == 3 and sum(latency["counts"]) == 3
    durations = sorted(Job.objects.get(id=i).duration_ms for i in [hooked["id"], *done])
    assert latency["p50_ms"] == pytest.approx(durations[1], abs=0.2)
    assert durations[0] - 0.2 <= latency["p95_ms"] <= durations[2] + 0.2

    failures = figures["failures"]
    assert [(c["error_code"], c["n"]) for c in failures["codes"]] == [("decode_failed", 1)]
    (example,) = failures["examples"]
    assert str(example["id"]) == bad and example["error_code"] == "decode_failed"
    assert f'href="/admin/jobs/job/{bad}/change/"' in html
    assert "error_code=decode_failed" in html

    # 6 uploads through the API, one of them answered by an existing job.
    assert figures["cache"] == {"uploads": 6, "hits": 1, "misses": 5, "ratio": pytest.approx(1 / 6)}
    assert re.search(r'data-figure="cache-ratio">17 %<', html)

    (beat,) = WorkerHeartbeat.objects.all()
    (shown,) = figures["workers"]
    assert shown["worker_id"] == beat.worker_id and shown["live"]
    assert (shown["backend"], shown["precision"], shown["weights"]) == (
        beat.info["backend"],
        beat.info["precision"],
        beat.info["weights"],
    )
    assert beat.worker_id in html and beat.info["weights"] in html

    hooks = figures["webhooks"]
    assert dict(hooks["deliveries"])["delivered"] == 1
    assert {o: (n, recent) for o, n, recent in hooks["outcomes"]} == {"2xx": (1, 1), "5xx": (1, 1)}
    assert [a["outcome"] for a in hooks["recent"]] == ["2xx", "5xx"]

    # The charts: inline SVG drawn here, one bar per minute with jobs, one point per 5 minutes.
    assert html.count('<svg class="cxrq-chart"') == 2
    assert 'data-chart="throughput"' in html and 'data-chart="latency"' in html
    assert html.count('class="bar"') in (2, 3, 4)  # succeeded and failed, in one minute or two
    assert html.count('class="point"') in (2, 4)  # p50 and p95, in one bucket or two
    assert waiting not in html  # queued jobs are counted, not listed


def test_an_empty_system_draws_empty_charts(admin_client):
    page = admin_client.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('<svg class="cxrq-chart"') == 2
    assert 'class="bar"' not in html and 'class="point"' not in html
    assert "No worker has reported in." in html and "No job failed in the last hour." in html
    assert page.context["figures"]["cache"]["ratio"] is None


def test_the_admin_index_links_to_it(admin_client):
    index = admin_client.get("/admin/").content.decode()
    assert f'href="{URL}"' in index


def test_only_staff_with_the_jobs_view_permission_see_it(client, db):
    anonymous = client.get(URL)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")

    client.force_login(get_user_model().objects.create_user("patient", password="pw-for-tests-only"))
    not_staff = client.get(URL)
    assert not_staff.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    client.logout()

    no_group = staff(client, "nobody", None)
    assert no_group.get(URL).status_code == 403
    assert f'href="{URL}"' not in no_group.get("/admin/").content.decode()
    no_group.logout()

    for username, group in (("viewer", "job viewers"), ("operator", "job operators")):
        member = staff(client, username, group)
        assert member.get(URL).status_code == 200
        assert f'href="{URL}"' in member.get("/admin/").content.decode()
        member.logout()
