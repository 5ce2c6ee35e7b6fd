"""Operators see every delivery and its attempts in the admin, on the job's page too."""

from __future__ import annotations

import pytest

from backend.webhooks import services
from backend.webhooks.models import WebhookDelivery
from tests.factories import png_bytes, post_image

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_job_page_and_the_delivery_page_show_the_attempts(api, admin_client, receiver):
    receiver.script = [500]
    job_id = post_image(api, png_bytes(seed=5), fields={"callback_url": receiver.url}).json()["id"]
    api.post(f"/api/v1/jobs/{job_id}/cancel")
    delivery = WebhookDelivery.objects.get(job_id=job_id)
    services.attempt(str(delivery.id))

    job_page = admin_client.get(f"/admin/jobs/job/{job_id}/change/")
    assert job_page.status_code == 200
    assert str(delivery.id) in job_page.content.decode() and "http_500" in job_page.content.decode()
    delivery_page = admin_client.get(f"/admin/webhooks/webhookdelivery/{delivery.id}/change/")
    assert delivery_page.status_code == 200 and "500" in delivery_page.content.decode()
    listing = admin_client.get("/admin/webhooks/webhookdelivery/", {"q": job_id})
    assert str(delivery.id) in listing.content.decode()
    assert admin_client.get("/admin/webhooks/webhookdelivery/", {"q": "not-a-uuid"}).status_code == 200
