"""Senders (add, remove, the development mapping) and a received instance -> a job, or a record of
why it is not scored.

A PACS sends whole studies: every instance of any storage class, in any order, cxrq's own SR
among them. An instance is sorted by its header first (backend/dicomnet/instances.py): cxrq's
own output and every object intake does not read (SR, presentation states, CT, ...) are recorded
as not scored (backend/dicomnet/unscored.py) and never reach intake. The rest goes through the
same intake as an HTTP upload (backend/jobs/services/intake.py `job_create`: validation, limits,
eligibility, de-identification, dedup per client, backpressure) with the sender's client and
priority; intake's refusal of a well-formed image it does not score (not a chest X-ray,
multi-frame, colour, ...) is recorded as not scored too, and a duplicate is recorded beside the
job that answers it. Everything else intake refuses (corrupt, truncated, over a limit, a full
queue), and a dataset that cannot be read to its end, is raised: the receiver answers with a
failure status.

The return path's PHI is read from the instance as received and sealed in the transaction that
creates the job, so a job never exists without the return path it came with, and a refused
instance leaves neither.
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
from backend.dicomnet import instances
from backend.dicomnet.models import DicomSender, ReturnPath, UnscoredInstance, UnscoredReason
from backend.dicomnet.returnpath import ReturnPathInfo, return_path_record
from backend.dicomnet.unscored import Why, unscored_record, why_not_eligible
from backend.jobs.dicom import IMAGE_SOP_CLASSES
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


class InstanceUnreadable(ApplicationError):
    """A received dataset that cannot be read to its end: truncated or corrupt."""

    code = "dicom_unreadable"
    status_code = 400
    default_message = "The DICOM dataset could not be read to its end (truncated or corrupt)."


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
    """A job (new, or the one that already scored the same image), and/or the record of why this
    instance is not scored; at least one of the two."""

    job: Job | None
    deduplicated: bool
    unscored: UnscoredInstance | None = None


def instance_receive(
    *,
    sender: DicomSender,
    part10: bytes,
    sop_class_uid: str,
    sop_instance_uid: str,
    peer_address: str = "",
) -> Received:
    """A C-STORE's dataset (as a Part 10 file) -> the sender's job with its return path, or the
    record of why it is not scored.

    Raises what intake raises for an instance it refuses rather than passes over (each an
    ApplicationError with its code), InstanceUnreadable, or DatasetMismatch."""
    header = _header(part10, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid)

    def unscored(why: Why, job: Job | None = None) -> UnscoredInstance:
        return unscored_record(
            sender=sender,
            why=why,
            sop_class_uid=instances.safe_uid(sop_class_uid),
            sop_class=instances.sop_class_name(sop_class_uid),
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=header.study_instance_uid if header else "",
            job=job,
        )

    if header is not None and header.is_own_output:
        why = Why(UnscoredReason.OWN_OUTPUT, attribute="Manufacturer", value=instances.OWN_MANUFACTURER)
        return Received(job=None, deduplicated=False, unscored=unscored(why))
    if sop_class_uid not in IMAGE_SOP_CLASSES:
        if header is not None and header.is_image:  # CT, MR, US, MG, ...: an image, not a radiograph
            why = Why(
                UnscoredReason.NOT_CHEST_XRAY,
                attribute="SOPClassUID",
                value=instances.sop_class_name(sop_class_uid)[:64],
                detail="sop_class_not_accepted",
            )
        else:  # SR, presentation state, key objects, PDF, waveform, ...
            why = Why(
                UnscoredReason.NOT_AN_IMAGE,
                attribute="SOPClassUID",
                value=instances.sop_class_name(sop_class_uid)[:64],
            )
        return Received(job=None, deduplicated=False, unscored=unscored(why))

    created: list[Job] = []

    def keep_return_path(job: Job) -> None:
        created.append(job)
        info = _return_path_info(part10, calling_ae_title=sender.ae_title)
        if info.sop_class_uid != sop_class_uid or info.sop_instance_uid != sop_instance_uid:
            raise DatasetMismatch()
        return_path_record(job=job, info=info, sender=sender, peer_address=peer_address)

    try:
        outcome = job_create(
            client=sender.client,
            upload=SimpleUploadedFile("instance.dcm", part10, content_type="application/dicom"),
            content_type="application/dicom",
            priority=Priority(sender.priority).label,
            on_create=keep_return_path,
        )
    except ApplicationError as exc:
        why = why_not_eligible(exc.code, exc.details)
        if why is None:
            raise
        return Received(job=None, deduplicated=False, unscored=unscored(why))
    made_here = bool(created)
    if outcome.deduplicated and not ReturnPath.objects.filter(job_id=outcome.job.pk).exists():
        # The same image sent before (over HTTP, or its return path already gone): this send is
        # where its result should go now.
        with transaction.atomic():
            keep_return_path(outcome.job)
    record = None
    # Deduplicated with a job made here is a new job answered from the organisation's cache.
    if outcome.deduplicated and not made_here:
        record = unscored(Why(UnscoredReason.DUPLICATE, detail="same_image"), job=outcome.job)
    return Received(job=outcome.job, deduplicated=outcome.deduplicated, unscored=record)


def _header(part10: bytes, *, sop_class_uid: str, sop_instance_uid: str) -> instances.InstanceHeader | None:
    """The header, checked against the request; None where only intake can read it (Deflated)."""
    try:
        header = instances.read_header(part10)
    except instances.Unreadable as exc:
        if str(exc) == "deflated" and sop_class_uid in IMAGE_SOP_CLASSES:
            return None  # intake inflates it with a bound and checks it whole
        raise InstanceUnreadable() from None
    if header.sop_class_uid != sop_class_uid or header.sop_instance_uid != sop_instance_uid:
        raise DatasetMismatch()
    return header


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
