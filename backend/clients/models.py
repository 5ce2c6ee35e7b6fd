"""Who calls the API: a Client (a hospital, a department or an application) and its API keys.

Every job belongs to one client, and every read and write is scoped by it
(backend/jobs/selectors.py and services/). Keys are djangorestframework-api-key
keys: `<8-character prefix>.<32-character secret>`, looked up by prefix and
stored only as a SHA-512 hash (the secret is 190 random bits, so a slow
password hash would add latency to every request and no safety).
"""

from __future__ import annotations

import uuid

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class Scope(models.TextChoices):
    SUBMIT = "submit", "submit: upload and read its client's jobs"
    READ = "read", "read: read its client's jobs"
    OPERATOR = "operator", "operator: health and queue figures, no job data"


class Client(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    max_queued_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Jobs this client may have waiting at once (429 client_queue_full past it). "
        "Empty: CXRQ_CLIENT_MAX_QUEUED_JOBS; 0: no cap.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queued_jobs_cap(self) -> int:
        from django.conf import settings

        return settings.CLIENT_MAX_QUEUED_JOBS if self.max_queued_jobs is None else self.max_queued_jobs

    # DRF treats the authenticated principal as request.user.
    is_authenticated = True
    is_anonymous = False


class ApiKey(AbstractAPIKey):
    """One of a client's keys. Several can be live at once, so a key is rotated by adding the
    new one, moving the callers over, then revoking the old one."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.SUBMIT)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
