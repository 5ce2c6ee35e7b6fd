"""Where a client's results go back as DICOM (DicomDestination), and how each one went (PacsDelivery,
PacsAttempt).

As for webhooks (backend/webhooks/models.py), the delivery row is the truth: its status and when
its next attempt is due; the Celery message that names it is only a wake-up. One delivery per
(job, destination), enforced by the database, so scheduling twice sends once.
"""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from backend.dicomnet.models import validate_ae_title


class DicomDestination(models.Model):
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="dicom_destinations")
    name = models.CharField(max_length=64, help_text="How this PACS is called here (unique per client).")
    ae_title = models.CharField(
        "called AE title",
        max_length=16,
        validators=[validate_ae_title],
        help_text="The PACS's own AE title (the called AE title of each association).",
    )
    host = models.CharField(max_length=255, help_text="Its address or host name.")
    port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])
    calling_ae_title = models.CharField(
        "calling AE title",
        max_length=16,
        blank=True,
        validators=[validate_ae_title],
        help_text="The AE title cxrq calls it with (the PACS may check it); empty: CXRQ_DICOM_AE_TITLE.",
    )
    send_secondary_capture = models.BooleanField(
        default=False,
        help_text="Also send a Secondary Capture image with the findings beside the image, for "
        "viewers that do not show structured reports.",
    )
    enabled = models.BooleanField(default=True, help_text="Off: no new deliveries are scheduled to it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client", "name"]
        verbose_name = "DICOM destination"
        constraints = [
            models.UniqueConstraint(fields=["client", "name"], name="dicom_destination_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"


class PacsDeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    # Can never succeed: the destination went, the return path or the result is gone.
    FAILED = "failed", "failed"
    GAVE_UP = "gave_up", "gave up"  # retried until PACS_GIVE_UP_SECONDS after the job ended


class PacsDelivery(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="pacs_deliveries")
    # A removed destination leaves its deliveries as the record (named by destination_name).
    destination = models.ForeignKey(
        DicomDestination, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    destination_name = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=PacsDeliveryStatus.choices, default=PacsDeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while an attempt runs (a claim): another message for the same delivery finds it taken.
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "PACS delivery"
        verbose_name_plural = "PACS deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="pacs_due_idx")]
        constraints = [
            models.UniqueConstraint(fields=["job", "destination"], name="pacs_delivery_once_per_destination")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} -> {self.destination_name} {self.status}"


class PacsAttempt(models.Model):
    delivery = models.ForeignKey(PacsDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    dimse_status = models.PositiveIntegerField(
        null=True, blank=True, help_text="The C-STORE response status (0 success); null: none came."
    )
    error = models.CharField(
        max_length=255,
        blank=True,
        help_text="connect_error, association_rejected, association_aborted, no_response, dimse_0xA700, ...",
    )
    sent = models.PositiveSmallIntegerField(default=0, help_text="Objects the PACS stored (SR, SC).")

    class Meta:
        ordering = ["delivery", "number"]
        verbose_name = "PACS attempt"
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="pacs_attempt_number_unique")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
