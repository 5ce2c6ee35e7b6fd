"""The delivery to PACS and the API share one SR: whichever asks first builds it, the other is
served the stored copy (backend/interop/store.py)."""

from __future__ import annotations

import io

import pydicom
import pytest

from backend.interop import sr
from backend.interop.models import StoredReport
from backend.pacs import services
from backend.pacs.models import PacsDelivery, PacsDeliveryStatus
from tests.pacs.factories import api_for, succeeded_dicom_job

pytestmark = pytest.mark.django_db


def test_the_sr_sent_to_the_pacs_is_the_one_the_api_serves_built_once(
    hospital, destination, storescp, monkeypatch
):
    builds = []
    build_sr = sr.build_sr
    monkeypatch.setattr(sr, "build_sr", lambda **kwargs: builds.append(1) or build_sr(**kwargs))
    destination(storescp.port)
    job, _ = succeeded_dicom_job(hospital)
    delivery = PacsDelivery.objects.get(job=job)

    assert services.attempt(str(delivery.id)) == PacsDeliveryStatus.DELIVERED
    assert StoredReport.objects.filter(result_id=job.id, kind="sr").count() == 1
    response = api_for(hospital).get(f"/api/v1/jobs/{job.id}/sr.dcm", HTTP_ACCEPT="application/dicom")
    assert response.status_code == 200
    assert len(builds) == 1
    (sent,) = storescp.received()
    served = pydicom.dcmread(io.BytesIO(response.content))
    assert (sent.SOPInstanceUID, sent.PatientID) == (served.SOPInstanceUID, served.PatientID)
    assert sent.ContentSequence == served.ContentSequence
