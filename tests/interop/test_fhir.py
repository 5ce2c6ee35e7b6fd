"""GET /api/v1/jobs/{id}/fhir: a DiagnosticReport that fhir.resources validates, with 18
Observations carrying the stored values; and the webhook payload format fhir."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from backend.interop import fhir, findings
from backend.jobs.model_identity import LABELS, current_model_version
from backend.jobs.models import Job
from backend.jobs.services import cancellation
from backend.webhooks.services import payload_for
from tests.factories import assert_error, client_and_key, default_client
from tests.interop.factories import PATIENT, png_job, received_job, succeed

pytestmark = pytest.mark.django_db


def get_report(api, job_id) -> tuple[DiagnosticReport, dict]:
    response = api.get(f"/api/v1/jobs/{job_id}/fhir", HTTP_ACCEPT="application/fhir+json")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/fhir+json"
    body = json.loads(response.content)
    return DiagnosticReport.model_validate(body), body


def observations(report: DiagnosticReport) -> dict[str, Observation]:
    contained = {r.id: r for r in report.contained}
    found = {}
    for reference in report.result:
        observation = contained[reference.reference.removeprefix("#")]
        assert isinstance(observation, Observation)
        found[observation.code.text] = observation
    return found


def test_the_report_validates_and_carries_18_observations_with_the_stored_values(api):
    (job,) = succeed(png_job(default_client()))
    report, body = get_report(api, job.id)
    assert body["resourceType"] == "DiagnosticReport"
    assert report.status == "preliminary"
    by_name = observations(report)
    assert len(by_name) == 18
    stored = job.result.probabilities
    seen = set()
    for label in LABELS:
        observation = by_name[label.replace("_", " ")]
        assert float(observation.valueQuantity.value) == stored[label]
        assert observation.valueQuantity.system == "http://unitsofmeasure.org"
        (interpretation,) = observation.interpretation
        code = interpretation.coding[0].code
        assert code == ("POS" if stored[label] >= findings.OPERATING_POINT else "NEG")
        seen.add(code)
        assert observation.device.reference == "#algorithm"
        value, scheme, _ = findings.finding_code(label)
        assert (observation.code.coding[0].system, observation.code.coding[0].code) == (
            fhir.SYSTEMS[scheme],
            value,
        )
    assert seen == {"POS", "NEG"}
    positives = [label.replace("_", " ") for label in LABELS if stored[label] >= 0.5]
    assert report.conclusion.startswith("Above the model's operating point: " + ", ".join(positives))
    assert "Untrained model weights" in report.conclusion

    (device,) = [r for r in report.contained if isinstance(r, Device)]
    assert device.deviceName[0].name == "densenet121-res224-all"
    versions = {v.type.text: v.value for v in device.version}
    assert versions["model version"] == current_model_version()
    assert versions["weights"] == "untrained"
    # An HTTP upload: no study, patient or order to reference.
    assert report.imagingStudy is None and report.subject is None and report.basedOn is None


def test_a_dicom_sourced_job_references_its_imaging_study_by_study_instance_uid(api):
    job, sent = received_job(default_client())
    (job,) = succeed(job)
    report, _ = get_report(api, job.id)
    (study,) = report.imagingStudy
    assert study.type == "ImagingStudy"
    assert study.identifier.system == "urn:dicom:uid"
    assert study.identifier.value == f"urn:oid:{sent.StudyInstanceUID}"
    assert report.subject.identifier.value == PATIENT["patient_id"]
    assert report.basedOn[0].identifier.value == PATIENT["accession"]
    assert PATIENT["patient_name"] not in report.model_dump_json()


def test_another_clients_job_is_not_found_and_a_queued_one_has_no_report(api):
    other, _ = client_and_key("hospital-b")
    (theirs,) = succeed(png_job(other, seed=9))
    assert_error(api.get(f"/api/v1/jobs/{theirs.id}/fhir"), 404, "job_not_found")
    queued = png_job(default_client(), seed=10)
    error = assert_error(
        api.get(f"/api/v1/jobs/{queued.id}/fhir", HTTP_ACCEPT="application/fhir+json"),
        409,
        "job_not_succeeded",
    )
    assert error["details"] == {"status": "queued"}


def test_a_fhir_client_gets_its_webhooks_as_fhir_without_the_return_path_phi():
    client = default_client()
    job, sent = received_job(client)
    (job,) = succeed(job)
    job = Job.objects.select_related("client", "result").get(id=job.id)
    assert json.loads(payload_for(job))["status"] == "succeeded"  # the default: the job's JSON

    client.webhook_payload_format = "fhir"
    client.full_clean()
    client.save(update_fields=["webhook_payload_format"])
    job = Job.objects.select_related("client", "result").get(id=job.id)
    payload = payload_for(job)
    report = DiagnosticReport.model_validate_json(payload)
    assert len(observations(report)) == 18
    text = payload.decode()
    for secret in (
        sent.StudyInstanceUID,
        PATIENT["patient_id"],
        PATIENT["accession"],
        PATIENT["patient_name"],
    ):
        assert secret not in text

    cancelled = png_job(client, seed=11)
    cancellation.job_cancel(client=client, job_id=cancelled.id)
    unavailable = DiagnosticReport.model_validate_json(payload_for(Job.objects.get(id=cancelled.id)))
    assert unavailable.status == "cancelled" and not unavailable.result
