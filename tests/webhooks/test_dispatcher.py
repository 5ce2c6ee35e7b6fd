"""The whole webhook path with real processes: an upload with a callback_url, a real worker
(fake model) runs it, the real dispatcher (`manage.py run_dispatcher`) delivers, a real receiver
checks the signature with the documented recipe."""

from __future__ import annotations

import json
import time

import pytest

from backend.webhooks import services, signing
from backend.webhooks.models import DeliveryStatus, WebhookDelivery
from tests.factories import client_and_key, png_bytes, post_image

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAKE_WORKER = {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "20"}


def _wait_delivered(job_id: str, timeout: float = 60) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = WebhookDelivery.objects.filter(job_id=job_id).first()
        if delivery is not None and delivery.status != DeliveryStatus.PENDING:
            return delivery
        time.sleep(0.1)
    raise TimeoutError(f"no delivery ended for {job_id}")


def test_a_finished_job_is_delivered_retried_after_a_500_and_signed(
    api, receiver, start_worker, start_dispatcher, settings
):
    settings.PUBLIC_URL = "http://testserver"
    receiver.script = [500]
    dispatcher = start_dispatcher(
        {"CXRQ_WEBHOOK_RETRY_BASE_SECONDS": "0.3", "CXRQ_PUBLIC_URL": "http://testserver"}
    )
    worker = start_worker(FAKE_WORKER)
    response = post_image(api, png_bytes(seed=3), fields={"callback_url": receiver.url, "priority": "stat"})
    assert response.status_code == 202
    job_id = response.json()["id"]

    delivery = _wait_delivered(job_id)
    assert delivery.status == DeliveryStatus.DELIVERED, (dispatcher.log[-3000:], worker.log[-2000:])
    first, second = receiver.wait_for(2)
    secret = client_and_key()[0].webhook_secret
    for request in (first, second):
        assert signing.verify(secret, request.headers, request.body)
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 0.25  # the backoff, not an immediate retry

    shown = api.get(f"/api/v1/jobs/{job_id}").json()
    assert shown["status"] == "succeeded"
    assert json.loads(second.body) == {  # the reference stays sealed at rest: not in a payload
        k: v for k, v in shown.items() if k not in ("webhooks", "pacs", "queue", "reference")
    }
    (logged,) = shown["webhooks"]
    assert logged["event"] == "job.succeeded" and logged["status"] == "delivered"
    assert [a["response_code"] for a in logged["attempts"]] == [500, 200]


def test_a_delivery_whose_wake_up_was_lost_is_sent_by_the_sweep(api, receiver, start_dispatcher, monkeypatch):
    monkeypatch.setattr(services, "send_wakeups", lambda ids, countdown=0.0: 0)  # the broker lost it
    response = post_image(api, png_bytes(seed=4), fields={"callback_url": receiver.url})
    job_id = response.json()["id"]
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    assert WebhookDelivery.objects.get(job_id=job_id).status == DeliveryStatus.PENDING

    start_dispatcher({"CXRQ_WEBHOOK_SWEEP_SECONDS": "1"}, beat=True)
    assert _wait_delivered(job_id).status == DeliveryStatus.DELIVERED
    (request,) = receiver.wait_for(1)
    assert json.loads(request.body)["status"] == "cancelled"


def test_the_dispatcher_runs_the_retention_purge_on_its_schedule(api, worker, start_dispatcher, media_files):
    from datetime import timedelta

    from django.utils import timezone

    from backend.jobs.models import Job

    job_id = post_image(api, png_bytes(seed=6)).json()["id"]
    worker.drain()
    Job.objects.filter(id=job_id).update(finished_at=timezone.now() - timedelta(days=31))
    start_dispatcher({"CXRQ_PURGE_INTERVAL_SECONDS": "1"}, beat=True)
    deadline = time.monotonic() + 30
    while Job.objects.get(id=job_id).image_deleted_at is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert media_files() == []
