"""Clients, organisations and keys in the admin: rates and sharing set there, key values never shown."""

from __future__ import annotations

import pytest

from backend.clients.models import Client, Organisation
from tests.factories import client_and_key

pytestmark = pytest.mark.django_db


def test_a_clients_rates_and_organisation_are_set_in_the_admin(admin_client):
    org = Organisation.objects.create(name="st-mary")
    target, key = client_and_key(name="radiology")
    url = f"/admin/clients/client/{target.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert key.partition(".")[2] not in page.content.decode()  # never the secret
    form = {
        "name": "radiology",
        "organisation": str(org.pk),
        "upload_rate": "120/min",
        "read_rate": "0",
        "max_queued_jobs": "",
        "webhook_payload_format": "job",
        "reference_from_dicom": "accession_number",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
    }
    bad = admin_client.post(url, form | {"upload_rate": "lots"})
    assert bad.status_code == 200 and "not a rate" in bad.content.decode()  # the form, not a 500
    assert Client.objects.get(pk=target.pk).upload_rate == ""
    saved = admin_client.post(url, form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    target.refresh_from_db()
    assert (target.upload_rate, target.read_rate, target.organisation) == ("120/min", "0", org)


def test_an_organisation_opts_in_to_sharing_in_the_admin(admin_client):
    org = Organisation.objects.create(name="st-john")
    response = admin_client.post(
        f"/admin/clients/organisation/{org.pk}/change/", {"name": "st-john", "share_inference_cache": "on"}
    )
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.share_inference_cache
    assert admin_client.get("/admin/clients/organisation/").status_code == 200
