"""Jobs with results for the report tests: made through intake (HTTP or the DICOM receiver's
service) and ended through the claim service with a result shaped as the worker stores it."""

from __future__ import annotations

import io

import pydicom
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.clients.models import Client
from backend.dicomnet import services as dicomnet
from backend.jobs.model_identity import LABELS, MODEL_NAME, current_model_version
from backend.jobs.models import Job
from backend.jobs.services import claims, intake
from tests.dicomnet.factories import cr_chest
from tests.factories import claim, png_bytes

PATIENT = {"patient_id": "PID-INTEROP-0042", "patient_name": "ROE^RICHARD", "accession": "ACC-INTEROP-7"}
FALLBACK_SHA = "5f" * 32


def probabilities(seed: int = 0) -> dict[str, float]:
    """18 distinct probabilities, some on each side of the operating point (0.5), by seed."""
    return {label: ((i * 7 + seed * 5) % 19 + 0.5) / 19.5 for i, label in enumerate(LABELS)}


def provenance() -> dict:
    """As worker/runtime/model.py writes it for the untrained fallback."""
    return {
        "model": MODEL_NAME,
        "model_version": current_model_version(),
        "labels": list(LABELS),
        "weights": "untrained",
        "weights_sha256": "untrained",
        "fallback_weights_sha256": FALLBACK_SHA,
        "preprocessing": "pp3",
        "backend": "torch",
        "precision": "fp32",
        "precision_requested": "fp32",
    }


def succeed(*jobs: Job, seed: int = 0) -> list[Job]:
    """Claim the queued jobs and store a result for each of these."""
    batch = claim(100)
    wanted = {job.id for job in jobs}
    outcomes = [
        claims.InferenceOutcome(
            job_id=job_id,
            probabilities=probabilities(seed),
            provenance=provenance(),
            timings={"batch_size": 1},
        )
        for job_id in batch.job_ids
        if job_id in wanted
    ]
    assert len(outcomes) == len(wanted), "a job to succeed was not queued"
    claims.job_store_results(batch=batch, outcomes=outcomes)
    return [Job.objects.select_related("result").get(id=job.id) for job in jobs]


def png_job(client: Client, seed: int = 0) -> Job:
    upload = SimpleUploadedFile("chest.png", png_bytes(seed=seed))
    return intake.job_create(client=client, upload=upload).job


def http_dicom_job(client: Client, seed: int = 0) -> Job:
    upload = SimpleUploadedFile("chest.dcm", cr_chest(seed=seed, **PATIENT), content_type="application/dicom")
    return intake.job_create(client=client, upload=upload, content_type="application/dicom").job


def received_job(
    client: Client, *, ae_title: str = "MODALITY1", seed: int = 0
) -> tuple[Job, pydicom.Dataset]:
    """A job that came over DICOM (the receiver's service keeps its return path), and the dataset sent."""
    sender = dicomnet.sender_add(ae_title=ae_title, client=client)
    data = cr_chest(seed=seed, **PATIENT)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    received = dicomnet.instance_receive(
        sender=sender, part10=data, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID)
    )
    return received.job, ds
