"""DICOM jobs with results for the delivery tests: received through the DICOM receiver's service
(which keeps their return path), ended through the claim service (tests/interop/factories.py)."""

from __future__ import annotations

import io

import pydicom
from rest_framework.test import APIClient

from backend.clients.models import Client
from backend.dicomnet import services as dicomnet
from backend.dicomnet.models import DicomSender
from backend.jobs.models import Job
from tests.dicomnet.factories import cr_chest
from tests.factories import client_and_key
from tests.interop.factories import PATIENT, succeed


def received_job(
    client: Client, *, seed: int = 0, ae_title: str = "MODALITY", delete_after_delivery: bool = False
) -> tuple[Job, pydicom.Dataset]:
    """A job that came over DICOM from `ae_title` (a sender of `client`), and the dataset sent."""
    sender = DicomSender.objects.filter(ae_title=ae_title).first() or dicomnet.sender_add(
        ae_title=ae_title, client=client, delete_after_delivery=delete_after_delivery
    )
    data = cr_chest(seed=seed, **PATIENT)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    received = dicomnet.instance_receive(
        sender=sender, part10=data, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID)
    )
    return received.job, ds


def succeeded_dicom_job(client: Client, **kwargs) -> tuple[Job, pydicom.Dataset]:
    job, ds = received_job(client, **kwargs)
    (job,) = succeed(job, seed=kwargs.get("seed", 0))
    return job, ds


def api_for(client: Client) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_and_key(client.name)[1]}")
    return api


def sr_probabilities(sr: pydicom.Dataset) -> dict[str, float]:
    """Each finding's Probability in the SR's content tree, by its tracking identifier (the label)."""
    found: dict[str, float] = {}

    def walk(items, label: str | None) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if name == "Tracking Identifier":
                label = str(item.TextValue)
            if item.get("ValueType") == "NUM" and name == "Probability" and label is not None:
                found[label] = float(item.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence, label)

    for group in sr.ContentSequence:
        walk([group], None)
    return found
