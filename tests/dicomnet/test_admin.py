"""The admin: senders can be edited; return paths are listed without their PHI."""

from __future__ import annotations

import pydicom
import pytest

from backend.dicomnet import services
from tests.dicomnet.factories import cr_chest

pytestmark = pytest.mark.django_db


def test_senders_are_listed_and_editable(admin_client, sender):
    assert admin_client.get("/admin/dicomnet/dicomsender/").status_code == 200
    page = admin_client.get(f"/admin/dicomnet/dicomsender/{sender.pk}/change/")
    assert page.status_code == 200 and b"MODALITY" in page.content


def test_a_return_path_shows_its_job_and_sender_never_its_phi(admin_client, sender):
    data = cr_chest(
        seed=5, patient_id="PID-ADMIN-SECRET", patient_name="ADMIN^SECRET", accession="ACC-ADMIN-SECRET"
    )
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    job = services.instance_receive(
        sender=sender, part10=data, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID)
    ).job
    for url in ("/admin/dicomnet/returnpath/", f"/admin/dicomnet/returnpath/{job.pk}/change/"):
        page = admin_client.get(url)
        assert page.status_code == 200
        body = page.content.decode()
        assert str(job.pk) in body and "MODALITY" in body
        for secret in ("PID-ADMIN-SECRET", "ADMIN^SECRET", "ACC-ADMIN-SECRET", str(ds.StudyInstanceUID)):
            assert secret not in body
    assert admin_client.get("/admin/dicomnet/returnpath/add/").status_code == 403
