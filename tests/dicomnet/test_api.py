"""GET /api/v1/dicom/unscored: a client sees what its senders sent that was not scored, never
another client's, paged, in the error shape when asked wrongly, and in the OpenAPI schema."""

from __future__ import annotations

import io
from io import StringIO

import pydicom
import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from backend.clients.models import Scope
from backend.dicomnet import services
from tests.dicomnet.factories import changed, cr_chest, non_image, uids
from tests.factories import client_and_key

pytestmark = pytest.mark.django_db

URL = "/api/v1/dicom/unscored"


def _receive(sender, data: bytes) -> services.Received:
    sop_class, sop_instance = uids(data)
    return services.instance_receive(
        sender=sender, part10=data, sop_class_uid=sop_class, sop_instance_uid=sop_instance
    )


def _api(name: str, scope: str = Scope.SUBMIT) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_and_key(name, scope=scope)[1]}")
    return api


def test_a_client_lists_its_unscored_instances_newest_first_and_only_its_own(sender, hospital):
    lateral = _receive(sender, changed(cr_chest(seed=1), ViewPosition="LL")).unscored
    sr = _receive(sender, non_image("1.2.840.10008.5.1.4.1.1.88.33", modality="SR")).unscored
    pa = cr_chest(seed=2)
    scored = _receive(sender, pa)
    duplicate = _receive(sender, pa).unscored
    elsewhere = services.sender_add(ae_title="ELSEWHERE", client=client_and_key("elsewhere")[0])
    _receive(elsewhere, changed(cr_chest(seed=3), BodyPartExamined="HAND"))

    response = _api(hospital.name).get(URL)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 3
    assert [r["id"] for r in body["results"]] == [duplicate.id, sr.id, lateral.id]
    first = body["results"][-1]
    assert {k: first[k] for k in ("reason", "attribute", "value", "detail", "calling_ae_title")} == {
        "reason": "not_chest_xray",
        "attribute": "ViewPosition",
        "value": "LL",
        "detail": "view_not_accepted",
        "calling_ae_title": "MODALITY",
    }
    assert body["results"][0]["job_id"] == str(scored.job.id)
    assert body["results"][1]["sop_class"] == "Comprehensive SR Storage"
    # The other client sees only its own.
    theirs = _api("elsewhere").get(URL).json()
    assert [r["attribute"] for r in theirs["results"]] == ["BodyPartExamined"]


def test_no_uid_or_patient_data_in_the_answer(sender, hospital):
    data = changed(cr_chest(seed=4, patient_id="PID-SECRET-1", patient_name="SECRET^NAME"), ViewPosition="LL")
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    _receive(sender, data)
    text = _api(hospital.name).get(URL).content.decode()
    for secret in ("SECRET", str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)):
        assert secret not in text


def test_filter_by_reason_pages_and_bad_input_in_the_error_shape(sender, hospital):
    for seed in range(3):
        _receive(sender, changed(cr_chest(seed=10 + seed), ViewPosition="LL"))
    _receive(sender, non_image("1.2.840.10008.5.1.4.1.1.11.1", modality="PR"))
    api = _api(hospital.name)
    only = api.get(URL, {"reason": "not_an_image"}).json()
    assert only["count"] == 1 and only["results"][0]["reason"] == "not_an_image"
    page = api.get(URL, {"page_size": 2}).json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    bad = api.get(URL, {"reason": "because"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_reason"
    assert "not_chest_xray" in bad.json()["error"]["details"]["accepted"]


def test_without_a_key_or_with_an_operator_key_it_is_refused(hospital):
    assert APIClient().get(URL).status_code == 401
    operator = _api("ops", scope=Scope.OPERATOR).get(URL)
    assert operator.status_code == 403 and operator.json()["error"]["code"] == "insufficient_scope"


def test_it_is_in_the_schema_with_its_parameters(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stdout=StringIO())
    operation = yaml.safe_load(out.read_text())["paths"][URL]["get"]
    assert operation["operationId"] == "dicom_unscored_list"
    assert {p["name"] for p in operation["parameters"]} == {"reason", "page", "page_size"}
    assert {"200", "400", "401"} <= set(operation["responses"])
