"""The admin: destinations edited there, deliveries and their attempts shown (read-only), on the
delivery's page and on its job's page."""

from __future__ import annotations

import pytest

from backend.pacs import services
from backend.pacs.models import DicomDestination, PacsDelivery
from tests.pacs.factories import succeeded_dicom_job

pytestmark = pytest.mark.django_db


def test_a_destination_is_added_in_the_admin(admin_client, hospital):
    response = admin_client.post(
        "/admin/pacs/dicomdestination/add/",
        {
            "client": hospital.pk,
            "name": "radiology",
            "ae_title": "RADPACS",
            "host": "10.20.0.9",
            "port": "11112",
            "calling_ae_title": "",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    destination = DicomDestination.objects.get(name="radiology")
    assert (destination.client, destination.ae_title, destination.port) == (hospital, "RADPACS", 11112)

    refused = admin_client.post(
        "/admin/pacs/dicomdestination/add/",
        {"client": hospital.pk, "name": "bad", "ae_title": "BAD\\AE", "host": "h", "port": "0"},
    )
    assert refused.status_code == 200 and not DicomDestination.objects.filter(name="bad").exists()


def test_deliveries_and_their_attempts_are_shown_on_their_page_and_the_jobs(
    admin_client, hospital, destination, closed_port, settings
):
    settings.PACS_TIMEOUT_SECONDS = 2.0
    destination(closed_port, name="down-pacs")
    job, _ = succeeded_dicom_job(hospital)
    delivery = PacsDelivery.objects.get(job=job)
    services.attempt(str(delivery.id))

    listing = admin_client.get("/admin/pacs/pacsdelivery/")
    assert listing.status_code == 200 and "down-pacs" in listing.content.decode()
    page = admin_client.get(f"/admin/pacs/pacsdelivery/{delivery.id}/change/").content.decode()
    assert "PACS attempts" in page and "connect_error" in page
    searched = admin_client.get("/admin/pacs/pacsdelivery/", {"q": str(job.id)}).content.decode()
    assert str(delivery.id) in searched


def test_the_jobs_page_lists_its_pacs_deliveries(admin_client, hospital, destination, closed_port):
    destination(closed_port, name="down-pacs")
    job, _ = succeeded_dicom_job(hospital)
    job_page = admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert "PACS deliveries" in job_page and "down-pacs" in job_page
