"""Who may send DICOM to cxrq (DicomSender), and what a DICOM job keeps to send its result back (ReturnPath).

A sender is a calling AE title (optionally tied to a host or network) mapped to a client and the
priority its instances get. Unknown or disabled titles are refused at association (backend/dicomnet/scp.py).

A ReturnPath holds the little PHI a PACS needs to file a result in the right study (patient ID
and name, study, accession, the source image's UIDs), sealed as one AES-GCM ciphertext
(backend/core/phi.py), never logged, never in API output. It goes when the job's image does
(retention or an operator's purge), when the job is deleted, or once its result was delivered
where the sender asks for that (backend/dicomnet/returnpath.py). HTTP uploads have none.
"""

from __future__ import annotations

import ipaddress

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from backend.jobs.models import Priority

# PS3.5 AE: 1-16 characters of the default repertoire, no backslash or control characters;
# leading and trailing spaces are not significant.
validate_ae_title = RegexValidator(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


def validate_allowed_host(value: str) -> None:
    """An address or a network (10.20.0.0/16); empty allows any peer."""
    if value:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValidationError("an IP address or network, e.g. 10.20.0.5 or 10.20.0.0/16") from exc


class DicomSender(models.Model):
    ae_title = models.CharField(
        "calling AE title",
        max_length=16,
        unique=True,
        validators=[validate_ae_title],
        help_text="The calling AE title the modality or PACS sends with (case-sensitive, as DICOM compares it).",
    )
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="dicom_senders")
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, default=Priority.ROUTINE, help_text="The priority of the jobs it sends."
    )
    allowed_host = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_allowed_host],
        help_text="The peer address or network it must connect from; empty: any.",
    )
    enabled = models.BooleanField(default=True, help_text="Off: its associations are refused.")
    return_path_delete_after_delivery = models.BooleanField(
        default=False,
        help_text="Delete the return path's PHI as soon as the result was delivered back, instead "
        "of at the end of the client's image retention window.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["ae_title"]
        verbose_name = "DICOM sender"

    def __str__(self) -> str:
        return self.ae_title

    def allows_address(self, address: str) -> bool:
        if not self.allowed_host:
            return True
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(self.allowed_host, strict=False)
        except ValueError:
            return False


class ReturnPath(models.Model):
    job = models.OneToOneField(
        "jobs.Job", on_delete=models.CASCADE, primary_key=True, related_name="return_path"
    )
    sender = models.ForeignKey(
        DicomSender, null=True, blank=True, on_delete=models.SET_NULL, related_name="return_paths"
    )
    calling_ae_title = models.CharField(max_length=16)
    peer_address = models.CharField(max_length=64, blank=True)
    # The PHI: patient ID and name, study and accession, the source image's UIDs (phi.py).
    sealed = models.BinaryField()
    key_id = models.CharField(max_length=16, help_text="Which CXRQ_PHI_KEY sealed it (rotation).")
    delete_after_delivery = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "return path"

    def __str__(self) -> str:
        return f"return path of {self.job_id}"


class UnscoredReason(models.TextChoices):
    """Why a received instance was accepted (C-STORE success) but not scored."""

    NOT_CHEST_XRAY = "not_chest_xray", "not a chest X-ray"
    NOT_AN_IMAGE = "not_an_image", "not an image"
    UNSUPPORTED_IMAGE = "unsupported_image", "an image cxrq cannot score"
    OWN_OUTPUT = "own_output", "cxrq's own output"
    DUPLICATE = "duplicate", "already received"


class UnscoredInstance(models.Model):
    """An instance a sender stored that became no job, and why: what a client sees of the rest of
    a study the PACS sent.

    No PHI: nothing of the patient, and the instance's and study's UIDs only as keyed hashes
    (HMAC-SHA256 under a key derived from CXRQ_PHI_KEY, per client: backend/dicomnet/unscored.py),
    which group one study's instances and recognise an instance sent again without saying which
    study it is. One row per client and instance: a second send updates it.
    """

    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="unscored_instances")
    sender = models.ForeignKey(
        DicomSender, null=True, blank=True, on_delete=models.SET_NULL, related_name="unscored_instances"
    )
    calling_ae_title = models.CharField(max_length=16)
    instance_key = models.CharField(max_length=64, help_text="Keyed hash of the SOP Instance UID.")
    study_key = models.CharField(max_length=64, blank=True, help_text="Keyed hash of the Study Instance UID.")
    sop_class_uid = models.CharField(max_length=64, blank=True)
    sop_class = models.CharField(max_length=80, blank=True, help_text="The SOP class's name, where known.")
    reason = models.CharField(max_length=24, choices=UnscoredReason.choices)
    attribute = models.CharField(max_length=40, blank=True, help_text="The attribute that decided.")
    value = models.CharField(max_length=64, blank=True, help_text="Its value, as a defined term or 'other'.")
    detail = models.CharField(max_length=40, blank=True, help_text="A stable code for the rule that applied.")
    job = models.ForeignKey(
        "jobs.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="For a duplicate: the job that already scored it.",
    )
    received_at = models.DateTimeField()
    last_received_at = models.DateTimeField()
    times_received = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-last_received_at", "-id"]
        verbose_name = "unscored DICOM instance"
        constraints = [
            models.UniqueConstraint(
                fields=["client", "instance_key"], name="unscored_instance_once_per_client"
            )
        ]
        indexes = [
            models.Index(fields=["client", "-last_received_at"], name="unscored_client_recent"),
            models.Index(fields=["last_received_at"], name="unscored_retention"),
        ]

    def __str__(self) -> str:
        return f"{self.reason} from {self.calling_ae_title}"


class UnscoredTally(models.Model):
    """How many instances were not scored, by reason, since the database was made: the source of
    /metrics' counter, which must not go down when retention deletes UnscoredInstance rows."""

    reason = models.CharField(max_length=24, choices=UnscoredReason.choices, primary_key=True)
    count = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "unscored instance tally"

    def __str__(self) -> str:
        return f"{self.reason}: {self.count}"
