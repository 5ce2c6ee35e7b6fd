"""Job state lives here; the broker only carries wake-up calls.

Every status and every transition is named once (JobStatus, Transition) and
each transition is one guarded UPDATE in backend/jobs/services/:

                 claim (claims.py)                   store (claims.py)
    QUEUED ------------------------> IN_PROGRESS -----------------------> SUCCEEDED
      ^  ^  ^                         |   |   |
      |  |  +-- release (claims.py) --+   |   +-- fail, retry_later at MAX_ATTEMPTS (claims.py),
      |  +----- retry_later (claims.py) --+       reap at MAX_ATTEMPTS (leases.py) ----> FAILED
      +-------- reap (leases.py) ---------+
    QUEUED / IN_PROGRESS --operator_fail (operators.py)--> FAILED
    QUEUED / IN_PROGRESS / FAILED --operator_requeue (operators.py)--> QUEUED
    QUEUED --cancel (cancellation.py)--> CANCELLED
    QUEUED / SUCCEEDED / FAILED / CANCELLED --delete (deletion.py; retention purge)--> DELETED
    IN_PROGRESS, cancel requested --discard (any move: store, fail, release, retry, reap)--> CANCELLED

A cancel of an in-progress job only marks it (cancel_requested_at): the batch
in hand runs to its end, and whatever move comes next ends the job CANCELLED
instead, its result not stored; it never goes back to the queue.

release gives the attempt back (shutdown, a batch claimed ahead and not run);
retry_later requeues with backoff after a transient error; reap requeues the
jobs of a lost worker once their lease has expired. Moves to the queue and to
an end go through services/transitions.py, which sets the same fields every time.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class JobStatus(models.TextChoices):
    QUEUED = "QUEUED", "queued"
    IN_PROGRESS = "IN_PROGRESS", "in progress"
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "failed"
    CANCELLED = "CANCELLED", "cancelled"
    # A tombstone: the client deleted the job, or its result's retention ran out. Its image and
    # result are gone; the row stays as the record that the job existed and when it went.
    DELETED = "DELETED", "deleted"

    @classmethod
    def ended(cls) -> tuple[JobStatus, ...]:
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED, cls.DELETED)

    @classmethod
    def ended_without_result(cls) -> tuple[JobStatus, ...]:
        """Ends that leave no result: such a job does not answer for its bytes (dedup skips it)."""
        return (cls.FAILED, cls.CANCELLED, cls.DELETED)


class Priority(models.IntegerChoices):
    """Lower is sooner. STAT: an urgent read (a suspected pneumothorax in the emergency room);
    ROUTINE: everything else. Claimed STAT first; a routine job waiting longer than
    PRIORITY_PROMOTION_SECONDS counts as STAT, so routine work is never starved for good."""

    STAT = 0, "stat"
    ROUTINE = 1, "routine"

    @classmethod
    def parse(cls, value: str | None) -> Priority:
        text = (value or "routine").strip().lower()
        for member in cls:
            if member.label == text:
                return member
        raise ValueError(text)


class Transition(models.TextChoices):
    """The named moves between statuses (the diagram above); logged by name."""

    CLAIM = "claim"
    STORE = "store"
    FAIL = "fail"
    RETRY_LATER = "retry_later"
    RELEASE = "release"
    REAP = "reap"
    OPERATOR_REQUEUE = "operator_requeue"
    OPERATOR_FAIL = "operator_fail"
    CANCEL = "cancel"
    DISCARD = "discard"
    DELETE = "delete"

    @classmethod
    def requeues(cls) -> tuple[Transition, ...]:
        return (cls.RETRY_LATER, cls.RELEASE, cls.REAP, cls.OPERATOR_REQUEUE)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The caller it belongs to: every read and write is scoped by it.
    client = models.ForeignKey("clients.Client", on_delete=models.PROTECT, related_name="jobs")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.ROUTINE)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the bytes as uploaded.")
    model_version = models.CharField(max_length=128)
    upload = models.FileField(upload_to="uploads/%Y/%m/%d/", max_length=255)
    original_filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    image_format = models.CharField(max_length=16, blank=True, help_text="Detected from content.")
    size_bytes = models.PositiveIntegerField(default=0)
    acquisition = models.JSONField(
        default=dict, blank=True, help_text="Non-identifying acquisition facts (modality, view, spacing)."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    attempts = models.PositiveSmallIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    # Claim bookkeeping: who holds the job and until when. The token changes
    # on every claim, so only the current holder can store a result.
    claimed_by = models.CharField(max_length=128, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    batch_id = models.UUIDField(null=True, blank=True)
    # Backoff: a job retried after a transient error is not claimed before this.
    available_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The client asked to cancel this job while it ran; it ends CANCELLED.",
    )
    # The X-Request-ID of the upload that created the job: the worker's log lines for it carry it.
    request_id = models.CharField(max_length=64, blank=True)
    # Where its end is announced (backend/webhooks/), checked against the client's allow-list.
    callback_url = models.CharField(max_length=2048, blank=True)
    # Retention (services/deletion.py): when the stored image went, and when the job became a tombstone.
    image_deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The client's own reference (backend/jobs/reference.py): sealed at rest (AES-GCM, the job id as
    # associated data), matched by a keyed hash; read and set through `reference`. Gone on delete.
    reference_sealed = models.BinaryField(null=True, blank=True, editable=False)
    reference_hash = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        # The admin's operator group has it: requeue and fail jobs. Viewers only look.
        permissions = [("operate_job", "Can requeue and fail jobs")]
        constraints = [
            # Dedup is the database's job, within one client: a cache hit tells a client
            # nothing about another's uploads (docs/security.md). FAILED jobs stay for the
            # record and do not block a new attempt for the same bytes.
            models.UniqueConstraint(
                fields=["client", "sha256", "model_version"],
                condition=~Q(status__in=["FAILED", "CANCELLED", "DELETED"]),
                name="job_unique_live_client_sha256_model",
            ),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in JobStatus]), name="job_status_valid"
            ),
        ]
        indexes = [
            # The claim: queued jobs of a model version, by client, oldest first (fair turns).
            models.Index(fields=["status", "model_version", "client", "created_at"], name="job_claim_idx"),
            # The claim's two passes (services/claims.py): fresh jobs by client and priority, oldest
            # first (each client's head is two probes), and the few retried ones apart.
            models.Index(
                fields=["model_version", "client", "priority", "created_at"],
                condition=Q(status="QUEUED", attempts=0),
                name="job_claim_fresh_idx",
            ),
            models.Index(
                fields=["model_version", "created_at"],
                condition=Q(status="QUEUED", attempts__gt=0),
                name="job_claim_retried_idx",
            ),
            models.Index(fields=["sha256"], name="job_sha256_idx"),
            models.Index(fields=["client", "-created_at"], name="job_client_created_idx"),
            # What ended lately: the dashboard's last hour, the ETA's throughput window, retention.
            models.Index(fields=["finished_at"], name="job_finished_at_idx"),
            # GET /jobs?reference=: a client's jobs by the keyed hash of their reference.
            models.Index(
                fields=["client", "reference_hash"],
                condition=~Q(reference_hash=""),
                name="job_client_reference_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.status}"

    @property
    def reference(self) -> str | None:
        """The client's reference, opened from its sealed form (None: none, or no key opens it)."""
        from backend.jobs import reference

        if not self.reference_sealed:
            return None
        cached = self.__dict__.get("_reference_plain")
        if cached is not None and cached[0] == bytes(self.reference_sealed):
            return cached[1]
        value = reference.open_sealed(bytes(self.reference_sealed), job_id=str(self.id))
        self.__dict__["_reference_plain"] = (bytes(self.reference_sealed), value)
        return value

    @reference.setter
    def reference(self, value: str | None) -> None:
        """Seal a (checked) reference onto this job, or clear it with None."""
        from backend.jobs import reference

        if not value:
            self.reference_sealed, self.reference_hash = None, ""
            return
        self.reference_sealed = reference.seal(value, job_id=str(self.id))
        self.reference_hash = reference.hash_of(value, client_id=str(self.client_id))
        self.__dict__["_reference_plain"] = (bytes(self.reference_sealed), value)

    @property
    def duration_ms(self) -> float | None:
        if self.finished_at and self.created_at:
            return (self.finished_at - self.created_at).total_seconds() * 1000
        return None


class JobResult(models.Model):
    """One row per succeeded job (the OneToOne makes a second result impossible)."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="result", primary_key=True)
    probabilities = models.JSONField(help_text="Pathology label -> probability.")
    provenance = models.JSONField(help_text="Model name, weights identity, versions, backend.")
    timings = models.JSONField(help_text="Per-phase milliseconds, batch id and size.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result of {self.job_id}"


class UploadBatch(models.Model):
    """Several images sent in one request (POST /api/v1/batches). Each image has its own
    outcome, in the order sent: a job (new or deduplicated) or the error that refused it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey("clients.Client", on_delete=models.PROTECT, related_name="upload_batches")
    created_at = models.DateTimeField(auto_now_add=True)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.ROUTINE)
    callback_url = models.CharField(max_length=2048, blank=True)
    # [{"index", "filename", "job_id"} | {"index", "filename", "error": {"code", "message"}}]
    items = models.JSONField(default=list)
    jobs = models.ManyToManyField(Job, related_name="upload_batches", blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["client", "-created_at"], name="batch_client_created_idx")]

    def __str__(self) -> str:
        return str(self.id)


class IdempotencyKey(models.Model):
    """An Idempotency-Key header a client sent on POST /jobs, and the job it answered with.

    Keys are the client's own namespace. A key is bound to the sha256 of the body
    it first came with: the same key with other bytes is a client error (409),
    never a second job.
    """

    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    request_sha256 = models.CharField(max_length=64)
    # Set once the job exists; NULL only while the first request with this key is in flight.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, null=True, related_name="idempotency_keys")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "key"], name="idempotency_key_per_client")]

    def __str__(self) -> str:
        return self.key


class WorkerHeartbeat(models.Model):
    """Each worker process reports in here; health reads it (no broker round trip)."""

    worker_id = models.CharField(max_length=128, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    model_version = models.CharField(max_length=128)
    info = models.JSONField(default=dict, help_text="Backend, precision, threads, weights.")
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.worker_id
