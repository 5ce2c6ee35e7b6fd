"""A client's eligibility rules, set in the admin: checked there, and applied to its uploads."""

from __future__ import annotations

import json

import pytest

from backend.clients.models import Client
from tests.factories import client_and_key

pytestmark = pytest.mark.django_db


def _form(name: str, eligibility: str) -> dict:
    return {
        "name": name,
        "organisation": "",
        "upload_rate": "",
        "read_rate": "",
        "max_queued_jobs": "",
        "webhook_payload_format": "job",
        "reference_from_dicom": "accession_number",
        "eligibility": eligibility,
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
    }


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('{"viewz": ["PA"]}', "Unknown eligibility keys: viewz"),
        ('{"views": ["P&A"]}', "is not a DICOM code string"),
        ('{"require": ["patient"]}', "require: a list drawn from"),
        ('{"views": ', "Enter a valid JSON"),
    ],
)
def test_a_bad_rule_is_shown_by_the_field_and_not_saved(admin_client, value, shown):
    target, _ = client_and_key(name="radiology")
    response = admin_client.post(f"/admin/clients/client/{target.pk}/change/", _form("radiology", value))
    assert response.status_code == 200  # the form again, not a 500
    assert shown in response.content.decode()
    assert Client.objects.get(pk=target.pk).eligibility == {}


def test_a_rule_set_in_the_admin_is_saved(admin_client):
    target, _ = client_and_key(name="radiology")
    rules = {"views": ["PA", "AP", "LL", "RL"], "require": ["modality"]}
    page = admin_client.get(f"/admin/clients/client/{target.pk}/change/")
    assert page.status_code == 200 and "eligibility" in page.content.decode()
    saved = admin_client.post(
        f"/admin/clients/client/{target.pk}/change/", _form("radiology", json.dumps(rules))
    )
    assert saved.status_code == 302, saved.content.decode()[:2000]
    target.refresh_from_db()
    assert target.eligibility == rules
