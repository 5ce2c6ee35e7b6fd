"""The return path: what a DICOM job keeps to file its result back in the sender's study.

The interface the result builders use (SR, FHIR, delivery to PACS):

    info = return_path_for(job)        # ReturnPathInfo, or None (HTTP upload, or already deleted)
    return_path_delivered(job=job)     # after a successful delivery: deletes it if the sender asked

The PHI is only ever in a ReturnPathInfo in memory: never log one, never serialize one into an
API answer (its repr hides the values).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from django.db import transaction

from backend.core import phi
from backend.dicomnet.models import DicomSender, ReturnPath

logger = logging.getLogger(__name__)

PHI_FIELDS = (
    "patient_id",
    "patient_name",
    "study_instance_uid",
    "accession_number",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
)


@dataclass(frozen=True)
class ReturnPathInfo:
    patient_id: str = field(repr=False)
    patient_name: str = field(repr=False)
    study_instance_uid: str = field(repr=False)
    accession_number: str = field(repr=False)
    series_instance_uid: str = field(repr=False)
    sop_instance_uid: str = field(repr=False)
    sop_class_uid: str
    calling_ae_title: str


def return_path_for(job) -> ReturnPathInfo | None:
    """The job's return path, decrypted; None for an HTTP upload or once it was deleted."""
    row = ReturnPath.objects.filter(job_id=job.pk).first()
    if row is None:
        return None
    values = phi.open_sealed(row.sealed, context=str(row.job_id))
    return ReturnPathInfo(
        **{name: str(values.get(name, "")) for name in PHI_FIELDS}, calling_ae_title=row.calling_ae_title
    )


def return_path_delivered(*, job) -> None:
    """The job's result reached the sender's PACS: its PHI goes now if the sender asked for that,
    else it stays until the image retention window ends (the SR and FHIR answers still need it)."""
    deleted, _ = ReturnPath.objects.filter(job_id=job.pk, delete_after_delivery=True).delete()
    if deleted:
        logger.info("event=return_path_deleted job_id=%s reason=delivered", job.pk)


def return_path_record(
    *, job, info: ReturnPathInfo, sender: DicomSender | None, peer_address: str = ""
) -> ReturnPath:
    """Keep the job's return path (sealed); a job that has one keeps its first."""
    values = {name: value for name, value in asdict(info).items() if name in PHI_FIELDS}
    sealed = phi.seal(values, context=str(job.pk))
    row, _ = ReturnPath.objects.get_or_create(
        job_id=job.pk,
        defaults={
            "sender": sender,
            "calling_ae_title": info.calling_ae_title,
            "peer_address": peer_address[:64],
            "sealed": sealed,
            "key_id": phi.key_id_of(sealed),
            "delete_after_delivery": bool(sender and sender.return_path_delete_after_delivery),
        },
    )
    return row


def return_paths_forget(job_ids: Iterable[uuid.UUID], *, reason: str) -> int:
    """Delete the return paths of these jobs (retention, a deleted job); how many went."""
    ids = list(job_ids)
    if not ids:
        return 0
    with transaction.atomic():
        deleted, _ = ReturnPath.objects.filter(job_id__in=ids).delete()
    if deleted:
        logger.info("event=return_path_deleted jobs=%d reason=%s", deleted, reason)
    return deleted
