"""Who may send DICOM to cxrq (DicomSender), and what a DICOM job keeps to send its result back (ReturnPath).

A sender is a calling AE title (optionally tied to a host or network) mapped to a client and the
priority its instances get. Unknown or disabled titles are refused at association (backend/dicomnet/scp.py).

A ReturnPath holds the little PHI a PACS needs to file a result in the right study (patient ID
and name, study, accession, the source image's UIDs), sealed as one AES-GCM ciphertext
(backend/dicomnet/phi.py), never logged, never in API output. It goes when the job's image does
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
