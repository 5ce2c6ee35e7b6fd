"""A job's end announced to its client's callback_url: one delivery per job end, its attempts.

The delivery row is the truth (status, when the next attempt is due); the Celery message
that carries it is only a wake-up, as for jobs: a lost or duplicated message costs at most
a sweep (the dispatcher re-sends deliveries overdue by WEBHOOK_SWEEP_SECONDS), never a
second delivery running at once (each attempt is claimed by a guarded UPDATE).
"""

from __future__ import annotations

import uuid

from django.db import models


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    GAVE_UP = "gave_up", "gave up"
    REFUSED = "refused", "refused"  # the target is not allowed (any more): never attempted


class WebhookDelivery(models.Model):
    # Sent as the `webhook-id` header: the same for every attempt, so a receiver dedups on it.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=32, help_text="job.succeeded, job.failed or job.cancelled")
    url = models.CharField(max_length=2048)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    # The body, fixed at the first attempt (the job as GET shows it then): every retry sends the same bytes.
    payload = models.BinaryField(null=True, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while an attempt runs (a claim): another message for the same delivery finds it taken.
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_due_idx")]

    def __str__(self) -> str:
        return f"{self.event} {self.job_id} {self.status}"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(
        max_length=255, blank=True, help_text="timeout, connection_refused, http_500, ..."
    )

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_number_unique")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
