"""A DICOM upload's default reference: its Accession Number (the client's reference_from_dicom),
over C-STORE from a real storescu and over HTTP; sealed at rest, shown only to its client, never
in the receiver's log."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from backend.jobs.models import Job
from tests.dicomnet.factories import cr_chest, storescu, write
from tests.factories import client_and_key, post_image

ACCESSION = "QXACC-20261207-42"


def _api(name: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_and_key(name)[1]}")
    return api


@pytest.mark.django_db(transaction=True)
def test_a_c_store_takes_the_accession_number_as_its_reference(start_scp, sender, hospital, tmp_path):
    scp = start_scp()
    path = write(tmp_path / "in", "cr.dcm", cr_chest(seed=41, accession=ACCESSION))
    out = storescu(scp.port, path, aet="MODALITY")
    assert out.returncode == 0, out.stdout + out.stderr
    job = Job.objects.get(client=hospital)
    assert job.reference == ACCESSION

    hospital_api = _api("hospital-dicom")
    assert hospital_api.get(f"/api/v1/jobs/{job.id}").json()["reference"] == ACCESSION
    found = hospital_api.get("/api/v1/jobs", {"reference": ACCESSION}).json()["results"]
    assert [j["id"] for j in found] == [str(job.id)]
    # Another client neither sees the job nor finds it by the accession.
    other = _api("someone-else")
    assert other.get(f"/api/v1/jobs/{job.id}").status_code == 404
    assert other.get("/api/v1/jobs", {"reference": ACCESSION}).json()["count"] == 0
    # Sealed at rest, and not in the receiver's log.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM jobs_job WHERE id = %s", [str(job.id)])
        row = repr(cursor.fetchall())
    assert ACCESSION not in row and ACCESSION.encode().hex() not in row
    assert ACCESSION not in scp.log


@pytest.mark.django_db
def test_a_client_whose_rule_is_none_gets_no_reference_from_dicom(hospital):
    from backend.dicomnet import services

    hospital.reference_from_dicom = "none"
    hospital.full_clean()
    hospital.save(update_fields=["reference_from_dicom"])
    sender = services.sender_add(ae_title="NOREF", client=hospital)
    import pydicom

    data = cr_chest(seed=42, accession=ACCESSION)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    received = services.instance_receive(
        sender=sender, part10=data, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID)
    )
    assert received.job.reference is None and received.job.reference_hash == ""


@pytest.mark.django_db
def test_an_http_dicom_upload_defaults_to_its_accession_and_a_given_reference_wins(api):
    assert post_image(api, cr_chest(seed=43, accession=ACCESSION), "a.dcm").json()["reference"] == ACCESSION
    given = post_image(api, cr_chest(seed=44, accession=ACCESSION), "b.dcm", fields={"reference": "MINE-1"})
    assert given.json()["reference"] == "MINE-1"
    # An Accession Number the reference rule refuses is no reference, and no reason to refuse the image.
    odd = post_image(api, cr_chest(seed=45, accession="ACC;7"), "c.dcm")
    assert odd.status_code == 202 and odd.json()["reference"] is None
    assert post_image(api, cr_chest(seed=46, accession=""), "d.dcm").json()["reference"] is None
