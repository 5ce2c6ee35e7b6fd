"""Who calls the API: a Client (a hospital, a department or an application) and its API keys.

Every job belongs to one client, and every read and write is scoped by it
(backend/jobs/selectors.py and services/). Keys are djangorestframework-api-key
keys: `<8-character prefix>.<32-character secret>`, looked up by prefix and
stored only as a SHA-512 hash (the secret is 190 random bits, so a slow
password hash would add latency to every request and no safety).
"""

from __future__ import annotations

import base64
import secrets
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class Scope(models.TextChoices):
    SUBMIT = "submit", "submit: upload and read its client's jobs"
    READ = "read", "read: read its client's jobs"
    OPERATOR = "operator", "operator: health and queue figures, no job data"


def validate_rate(value: str) -> None:
    """`N/unit` (unit s, min, h, day: DRF's syntax) or `0` for no limit; empty is the default."""
    from backend.clients.ratelimit import Rate

    if value:
        try:
            Rate.parse(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


def validate_eligibility(value) -> None:
    """A client's eligibility override: a JSON object with any of modalities, capture_modalities,
    capture_requires_body_part, body_parts, views, require (backend/jobs/eligibility.py)."""
    from backend.jobs.eligibility import validate_client_rules

    validate_client_rules(value)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64 (the HMAC key)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Organisation(models.Model):
    """Clients that trust each other (the departments and applications of one hospital). With
    share_inference_cache on, an image one member has had analysed is answered from that
    result for every member, without inference. Off by default: docs/security.md says why."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    share_inference_cache = models.BooleanField(
        default=False,
        help_text="Members are answered from each other's results for the same image and model. "
        "A member then learns, from a fast 200, that another member sent that image.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Client(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.PROTECT, related_name="clients"
    )
    upload_rate = models.CharField(
        max_length=32,
        blank=True,
        validators=[validate_rate],
        help_text="Uploads allowed, all keys together, e.g. 600/min. Empty: CXRQ_UPLOAD_RATE; 0: no limit.",
    )
    read_rate = models.CharField(
        max_length=32,
        blank=True,
        validators=[validate_rate],
        help_text="Reads (GET) allowed, all keys together, e.g. 6000/min. Empty: CXRQ_READ_RATE; 0: no limit.",
    )
    max_queued_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Jobs this client may have waiting at once (429 client_queue_full past it). "
        "Empty: CXRQ_CLIENT_MAX_QUEUED_JOBS; 0: no cap.",
    )
    webhook_secret = models.CharField(
        max_length=64,
        default=new_webhook_secret,
        help_text="Signs this client's webhooks (HMAC-SHA256, Standard Webhooks). Shown by "
        "`manage.py webhook_secret CLIENT`; rotated with --rotate.",
    )
    webhook_allowed_hosts = models.TextField(
        blank=True,
        help_text="Hosts a callback_url may name, one per line: a name (hooks.hospital.example), "
        "a domain and its subdomains (*.hospital.example), an address or a network (10.20.0.0/16). "
        "A private, loopback or link-local address is refused unless an address or network "
        "entry here covers it (backend/webhooks/targets.py).",
    )
    webhook_payload_format = models.CharField(
        max_length=8,
        choices=[("job", "job: the job as the API shows it"), ("fhir", "fhir: a FHIR R4 DiagnosticReport")],
        default="job",
        help_text="What this client's webhooks carry: the job's JSON, or its result as a FHIR "
        "DiagnosticReport (backend/interop/fhir.py).",
    )
    reference_from_dicom = models.CharField(
        max_length=24,
        choices=[
            ("accession_number", "accession_number: the Accession Number (0008,0050)"),
            ("none", "none: no reference unless the upload gives one"),
        ],
        default="accession_number",
        help_text="A DICOM upload (HTTP or C-STORE) that gives no reference takes this as its job's "
        "reference, sealed at rest and shown only to this client (backend/jobs/reference.py).",
    )
    image_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days an uploaded image is kept after its job ended. Empty: CXRQ_IMAGE_RETENTION_DAYS.",
    )
    result_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days a result is kept after its job ended; then the job becomes a tombstone. "
        "Empty: CXRQ_RESULT_RETENTION_DAYS.",
    )
    eligibility = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_eligibility],
        help_text="Which images this client's uploads may be, where it differs from the CXRQ_ELIGIBLE_* "
        'defaults; any of: {"modalities": ["CR", "DX"], "capture_modalities": ["OT", "SC"], '
        '"capture_requires_body_part": false, "body_parts": ["CHEST"], "views": ["PA", "AP", "LL"], '
        '"require": ["modality"]} ("require": attributes an image must state; with "modality", PNG and '
        "JPEG are refused). Empty: the defaults (docs/intake.md).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queued_jobs_cap(self) -> int:
        return settings.CLIENT_MAX_QUEUED_JOBS if self.max_queued_jobs is None else self.max_queued_jobs

    def rate_for(self, scope: str) -> str:
        """This client's rate for `upload` or `read`: its own, else the deployment's default."""
        own = self.upload_rate if scope == "upload" else self.read_rate
        return own or (settings.UPLOAD_RATE if scope == "upload" else settings.READ_RATE)

    @property
    def image_retention(self) -> int:
        return (
            settings.IMAGE_RETENTION_DAYS if self.image_retention_days is None else self.image_retention_days
        )

    @property
    def result_retention(self) -> int:
        return (
            settings.RESULT_RETENTION_DAYS
            if self.result_retention_days is None
            else self.result_retention_days
        )

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


class RateBucket(models.Model):
    """A rate limit's state where no Redis is configured (the embedded default): one row per
    client and scope, holding the GCRA's theoretical arrival time (backend/clients/ratelimit.py)."""

    key = models.CharField(max_length=100, primary_key=True)
    tat = models.FloatField(help_text="Theoretical arrival time, seconds since the epoch.")

    def __str__(self) -> str:
        return self.key
