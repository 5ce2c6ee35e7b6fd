"""Received instances that became no job: recorded with the reason, counted, and kept for a while.

A router takes whatever the PACS sends and picks what to score; the rest is answered with
success and recorded here (backend/dicomnet/models.py UnscoredInstance), so a client can see what
else of a study arrived and why it was not scored. One row per client and instance: sending it
again updates the row (times_received, last_received_at, the latest reason).

No PHI is stored. The SOP Instance and Study Instance UIDs are identifiers too (they can be
looked up in the PACS, and a study's UID often embeds a date and a device): they are kept only
as keyed hashes (phi.identifier_hash, per client), enough to recognise an instance sent again
and to group one study's instances, not to say which study it was.

The reason's details come from intake's refusal (its code and, for not_chest_xray, the attribute
and the value as the eligibility check shows it: a defined term or "other") or from the header
(the SOP class's name, never free text).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from backend.core.phi import identifier_hash
from backend.dicomnet.models import DicomSender, UnscoredInstance, UnscoredReason, UnscoredTally
from backend.jobs.models import Job

logger = logging.getLogger(__name__)

# Intake's refusals of well-formed images cxrq does not score, and the attribute each is about.
# Everything else intake refuses (undecodable, truncated, over a limit, a full queue) is still
# refused over DIMSE: the sender must know the instance did not arrive whole.
UNSUPPORTED_IMAGE_CODES: dict[str, str] = {
    "dicom_multiframe": "NumberOfFrames",
    "dicom_color": "PhotometricInterpretation",
    "dicom_unsupported_pixels": "PixelData",
    "dicom_burned_in_annotation": "BurnedInAnnotation",
    "image_too_small": "Rows",
    "image_too_many_pixels": "Rows",
}
_ATTRIBUTE_VALUE = {"Modality": "modality", "BodyPartExamined": "body_part", "ViewPosition": "view"}

PRUNE_CHUNK = 1000
_prune_lock = threading.Lock()
_last_prune = [float("-inf")]


@dataclass(frozen=True)
class Why:
    """Why an instance is not scored: a reason and what decided it."""

    reason: UnscoredReason
    attribute: str = ""
    value: str = ""
    detail: str = ""


def why_not_eligible(code: str, details: dict) -> Why | None:
    """Intake's refusal as a reason not to score, or None: a refusal that stays one."""
    if code == "not_chest_xray":
        attribute = str(details.get("attribute") or "")
        shown = details.get(_ATTRIBUTE_VALUE.get(attribute, ""))
        return Why(
            UnscoredReason.NOT_CHEST_XRAY,
            attribute=attribute,
            value=str(shown or "")[:64],
            detail=str(details.get("reason") or "")[:40],
        )
    if code in UNSUPPORTED_IMAGE_CODES:
        return Why(UnscoredReason.UNSUPPORTED_IMAGE, attribute=UNSUPPORTED_IMAGE_CODES[code], detail=code)
    return None


def _keys(*, client_id: int, sop_instance_uid: str, study_instance_uid: str) -> tuple[str, str]:
    instance = identifier_hash(str(client_id), "sop-instance", sop_instance_uid)
    study = identifier_hash(str(client_id), "study", study_instance_uid) if study_instance_uid else ""
    return instance, study


def unscored_record(
    *,
    sender: DicomSender,
    why: Why,
    sop_class_uid: str,
    sop_class: str,
    sop_instance_uid: str,
    study_instance_uid: str = "",
    job: Job | None = None,
    now: datetime | None = None,
) -> UnscoredInstance:
    """Record (or update) the sender's client's row for this instance, and count the reason."""
    now = now or timezone.now()
    client_id = sender.client_id
    instance_key, study_key = _keys(
        client_id=client_id, sop_instance_uid=sop_instance_uid, study_instance_uid=study_instance_uid
    )
    fields = {
        "sender": sender,
        "calling_ae_title": sender.ae_title,
        "sop_class_uid": sop_class_uid[:64],
        "sop_class": sop_class[:80],
        "reason": why.reason,
        "attribute": why.attribute[:40],
        "value": why.value[:64],
        "detail": why.detail[:40],
        "job": job,
        "last_received_at": now,
    }
    if study_key:
        fields["study_key"] = study_key
    mine = UnscoredInstance.objects.filter(client_id=client_id, instance_key=instance_key)
    with transaction.atomic():
        if not mine.update(**fields, times_received=F("times_received") + 1):
            try:
                with transaction.atomic():
                    UnscoredInstance.objects.create(
                        client_id=client_id, instance_key=instance_key, received_at=now, **fields
                    )
            except IntegrityError:  # the same instance in another association, a moment earlier
                mine.update(**fields, times_received=F("times_received") + 1)
        _count(why.reason)
    _prune_now_and_then(now=now)
    return mine.get()


def _count(reason: str) -> None:
    tally = UnscoredTally.objects.filter(reason=reason)
    if tally.update(count=F("count") + 1):
        return
    try:
        with transaction.atomic():
            UnscoredTally.objects.create(reason=reason, count=1)
    except IntegrityError:
        tally.update(count=F("count") + 1)


def unscored_prune(*, now: datetime | None = None) -> int:
    """Delete rows not received again for DICOM_UNSCORED_RETENTION_DAYS (0 or less: keep them);
    the tally stays. How many went."""
    days = settings.DICOM_UNSCORED_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while ids := list(
        UnscoredInstance.objects.filter(last_received_at__lt=cutoff).values_list("id", flat=True)[
            :PRUNE_CHUNK
        ]
    ):
        deleted += UnscoredInstance.objects.filter(id__in=ids).delete()[0]
    if deleted:
        logger.info("event=dicom_unscored_pruned rows=%d days=%d", deleted, days)
    return deleted


def _prune_now_and_then(*, now: datetime) -> None:
    """At most once per PURGE_INTERVAL_SECONDS in this process: the receiver's rows are capped as
    it writes them, without a scheduler of its own."""
    with _prune_lock:
        if time.monotonic() - _last_prune[0] < settings.PURGE_INTERVAL_SECONDS:
            return
        _last_prune[0] = time.monotonic()
    unscored_prune(now=now)
