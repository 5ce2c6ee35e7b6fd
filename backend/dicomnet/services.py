"""Senders (add, remove, the development mapping) and a received instance -> job.

A received instance goes through the same intake as an HTTP upload (backend/jobs/services/
intake.py `job_create`: validation, limits, eligibility, de-identification, dedup per client,
backpressure) with the sender's client and priority. The return path's PHI is read from the
instance as received and sealed in the transaction that creates the job, so a job never exists
without the return path it came with, and a refused instance leaves neither.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import pydicom
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from backend.clients.models import Client
from backend.core.exceptions import ApplicationError
from backend.dicomnet.models import DicomSender, ReturnPath
from backend.dicomnet.returnpath import ReturnPathInfo, return_path_record
from backend.jobs.models import Job, Priority
from backend.jobs.services.intake import job_create

logger = logging.getLogger(__name__)

DEVELOPMENT_AE_TITLE = "STORESCU"  # dcmtk's default calling AE title
_PHI_TAGS = [
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "AccessionNumber",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
]


class SenderExists(ApplicationError):
    code = "dicom_sender_exists"
    status_code = 409
    default_message = "A DICOM sender with this AE title exists."


class InvalidSender(ApplicationError):
    code = "invalid_dicom_sender"
    status_code = 400
    default_message = "The DICOM sender is not valid."


class DatasetMismatch(ApplicationError):
    """The dataset names another SOP class or instance than the C-STORE request carrying it."""

    code = "dicom_dataset_mismatch"
    status_code = 422
    default_message = "The dataset does not match the SOP class or instance of the request."


def sender_add(
    *,
    ae_title: str,
    client: Client,
    priority: str = "routine",
    allowed_host: str = "",
    enabled: bool = True,
    delete_after_delivery: bool = False,
) -> DicomSender:
    try:
        urgency = Priority.parse(priority)
    except ValueError:
        raise InvalidSender(details={"priority": priority}) from None
    sender = DicomSender(
        ae_title=ae_title.strip(),
        client=client,
        priority=urgency,
        allowed_host=allowed_host,
        enabled=enabled,
        return_path_delete_after_delivery=delete_after_delivery,
    )
    try:
        sender.full_clean(validate_unique=False)
    except ValidationError as exc:
        raise InvalidSender(details=exc.message_dict) from None
    with transaction.atomic():
        if DicomSender.objects.filter(ae_title=sender.ae_title).exists():
            raise SenderExists(details={"ae_title": sender.ae_title})
        sender.save()
    logger.info("event=dicom_sender_added calling_ae=%s client_id=%s", sender.ae_title, client.id)
    return sender


def sender_remove(*, ae_title: str) -> bool:
    deleted, _ = DicomSender.objects.filter(ae_title=ae_title.strip()).delete()
    if deleted:
        logger.info("event=dicom_sender_removed calling_ae=%s", ae_title.strip())
    return bool(deleted)


def development_sender(*, client: Client) -> DicomSender:
    """dcmtk's default calling title (STORESCU) mapped to the development client: `storescu -xy
    127.0.0.1 11112 file.dcm` works as it is. Idempotent; an existing mapping is left as it is."""
    sender, _ = DicomSender.objects.get_or_create(ae_title=DEVELOPMENT_AE_TITLE, defaults={"client": client})
    return sender


def sender_for(*, ae_title: str, address: str) -> tuple[DicomSender | None, str]:
    """The enabled sender for a calling AE title connecting from `address`, or (None, why not)."""
    sender = DicomSender.objects.select_related("client").filter(ae_title=ae_title.strip()).first()
    if sender is None:
        return None, "unknown_calling_ae"
    if not sender.enabled:
        return None, "sender_disabled"
    if not sender.allows_address(address):
        return None, "address_not_allowed"
    return sender, ""


@dataclass(frozen=True)
class Received:
    job: Job
    deduplicated: bool


def instance_receive(
    *,
    sender: DicomSender,
    part10: bytes,
    sop_class_uid: str,
    sop_instance_uid: str,
    peer_address: str = "",
) -> Received:
    """A C-STORE's dataset (as a Part 10 file) -> the sender's job, with its return path.

    Raises what intake raises (each an ApplicationError with its code), or DatasetMismatch."""

    def keep_return_path(job: Job) -> None:
        info = _return_path_info(part10, calling_ae_title=sender.ae_title)
        if info.sop_class_uid != sop_class_uid or info.sop_instance_uid != sop_instance_uid:
            raise DatasetMismatch()
        return_path_record(job=job, info=info, sender=sender, peer_address=peer_address)

    outcome = job_create(
        client=sender.client,
        upload=SimpleUploadedFile("instance.dcm", part10, content_type="application/dicom"),
        content_type="application/dicom",
        priority=Priority(sender.priority).label,
        on_create=keep_return_path,
    )
    if outcome.deduplicated and not ReturnPath.objects.filter(job_id=outcome.job.pk).exists():
        # The same image sent before (over HTTP, or its return path already gone): this send is
        # where its result should go now.
        with transaction.atomic():
            keep_return_path(outcome.job)
    return Received(job=outcome.job, deduplicated=outcome.deduplicated)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _return_path_info(part10: bytes, *, calling_ae_title: str) -> ReturnPathInfo:
    """The PHI the return needs, read from the instance as received (intake has accepted it, so
    its header is bounded and readable)."""
    ds = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True, specific_tags=_PHI_TAGS, force=True)
    return ReturnPathInfo(
        patient_id=_text(ds.get("PatientID")),
        patient_name=_text(ds.get("PatientName")),
        study_instance_uid=_text(ds.get("StudyInstanceUID")),
        accession_number=_text(ds.get("AccessionNumber")),
        series_instance_uid=_text(ds.get("SeriesInstanceUID")),
        sop_instance_uid=_text(ds.get("SOPInstanceUID")),
        sop_class_uid=_text(ds.get("SOPClassUID")),
        calling_ae_title=calling_ae_title,
    )
