"""The audit log: every action recorded with its actor, no PHI in it, append-only."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from backend.audit import services
from backend.audit.models import AuditEvent
from tests.factories import png_bytes, post_image, sample_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _reads_written_at_once(monkeypatch):
    monkeypatch.setattr(services, "READS_FLUSH_SIZE", 1)


def test_api_actions_are_recorded_with_their_actor_and_no_phi(api, api_key, worker):
    created = post_image(
        api, sample_bytes("00000001_000.png"), "DOE^JANE_MRN-12345.png", HTTP_X_REQUEST_ID="req-1"
    )
    job_id = created.json()["id"]
    worker.drain()
    post_image(api, sample_bytes("00000001_000.png"))  # a cache hit
    api.get(f"/api/v1/jobs/{job_id}")
    api.get("/api/v1/jobs", {"status": "succeeded"})

    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["job.created", "job.deduplicated", "job.read", "jobs.listed"]
    first = events[0]
    assert (first.actor, first.api_key_prefix, str(first.job_id)) == ("api_key", api_key[:8], job_id)
    assert first.client_id is not None and first.address == "127.0.0.1" and first.request_id == "req-1"
    assert events[3].details == {"status": "succeeded", "returned": 1}
    dump = str(list(AuditEvent.objects.values()))
    for phi in ("DOE", "MRN-12345", "Atelectasis", "probabilities", api_key[9:]):
        assert phi not in dump


def test_admin_and_command_actions_are_recorded(client, api):
    job_id = post_image(api, png_bytes(seed=3)).json()["id"]
    admin = get_user_model().objects.create_superuser("ops", "o@example.org", "pw-for-tests-only")
    client.force_login(admin)
    client.post("/admin/jobs/job/", {"action": "fail_selected", "_selected_action": [job_id]})
    call_command("create_client", "st-luke", stdout=StringIO())
    call_command("client_keys", "add", "st-luke", stdout=StringIO())

    failed = AuditEvent.objects.get(action="job.failed_by_operator")
    assert (failed.actor, failed.user, str(failed.job_id)) == ("admin", "ops", job_id)
    assert failed.details == {"failed": 1, "selected": 1}
    assert (
        AuditEvent.objects.filter(action__in=["client.created", "key.created"], actor="command").count() == 2
    )


def test_reads_are_written_in_batches(api, monkeypatch):
    monkeypatch.setattr(services, "READS_FLUSH_SIZE", 5)
    monkeypatch.setattr(services, "READS_FLUSH_SECONDS", 3600)
    job_id = post_image(api, png_bytes(seed=4)).json()["id"]
    for _ in range(4):
        api.get(f"/api/v1/jobs/{job_id}")
    assert AuditEvent.objects.filter(action="job.read").count() == 0  # buffered
    api.get(f"/api/v1/jobs/{job_id}")
    assert AuditEvent.objects.filter(action="job.read").count() == 5  # one bulk insert


def test_nobody_changes_or_deletes_an_event(client, api):
    post_image(api, png_bytes(seed=5))
    event = AuditEvent.objects.get()
    admin = get_user_model().objects.create_superuser("root", "r@example.org", "pw-for-tests-only")
    client.force_login(admin)
    assert client.get(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403
    page = client.post(f"/admin/audit/auditevent/{event.pk}/change/", {"action": "x"})
    assert page.status_code in (200, 403) and AuditEvent.objects.get().action == "job.created"
    if connection.vendor != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's; SQLite relies on the admin and services")
    for attempt in (
        lambda: AuditEvent.objects.update(action="edited"),
        lambda: AuditEvent.objects.all().delete(),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    assert AuditEvent.objects.get().action == "job.created"
