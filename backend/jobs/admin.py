"""Admin: watch jobs, find them by id or sha256, read results (never edit them)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

from backend.audit.actors import actor_from_request
from backend.audit.services import audit_read, audit_write
from backend.jobs import selectors, thumbnails
from backend.jobs.models import Job, JobResult, JobStatus, WorkerHeartbeat
from backend.jobs.services import deletion, operators
from backend.pacs.admin import PacsDeliveryInline
from backend.webhooks.admin import WebhookDeliveryInline


class JobResultInline(admin.StackedInline):
    model = JobResult
    can_delete = False
    extra = 0
    fields = ("pretty_probabilities", "pretty_provenance", "pretty_timings", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    @staticmethod
    def _pre(value) -> str:
        return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))

    @admin.display(description="probabilities")
    def pretty_probabilities(self, obj: JobResult) -> str:
        return self._pre(obj.probabilities)

    @admin.display(description="provenance")
    def pretty_provenance(self, obj: JobResult) -> str:
        return self._pre(obj.provenance)

    @admin.display(description="timings")
    def pretty_timings(self, obj: JobResult) -> str:
        return self._pre(obj.timings)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "preview",
        "id",
        "reference_shown",
        "client",
        "status",
        "weights",
        "sha256_prefix",
        "image_format",
        "created_at",
        "duration",
        "attempts",
        "error_code",
        "model_version",
    )
    list_filter = (
        "status",
        "client",
        ("created_at", admin.DateFieldListFilter),
        "image_format",
        "model_version",
        "priority",
        "error_code",
    )
    search_fields = ("=id", "sha256")
    list_select_related = ("client", "result")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_per_page = 100
    inlines = (JobResultInline, WebhookDeliveryInline, PacsDeliveryInline)
    # The client's reference is the client's alone: neither its ciphertext nor its hash is shown.
    readonly_fields = [
        f.name for f in Job._meta.fields if f.name not in ("reference_sealed", "reference_hash")
    ]

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("<uuid:job_id>/preview.png", preview, name="jobs_job_preview"), *super().get_urls()]

    def preview_view(self, request, job_id):
        """The job's stored image as a small PNG, for staff who may view jobs; audited like any read
        of a job's data by a person."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = Job.objects.filter(id=job_id).first()
        try:
            png = thumbnails.preview_of(job) if job else None
        except thumbnails.ThumbnailError:
            png = None
        if png is None:
            raise Http404("no stored image")
        audit_read(
            actor=actor_from_request(request),
            action="job.image_viewed",
            job_id=job.id,
            details={"via": "admin"},
        )
        return HttpResponse(png, content_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @admin.display(description="image")
    def preview(self, obj: Job) -> str:
        if not obj.upload or obj.image_deleted_at is not None:
            return "-"
        url = reverse("admin:jobs_job_preview", kwargs={"job_id": obj.id})
        return format_html(
            '<img src="{}" alt="" width="48" height="48" loading="lazy" style="object-fit:cover">', url
        )

    def get_search_results(self, request, queryset, search_term):
        # `=id` on a UUID field fails on malformed input; fall back to sha256 only.
        import uuid

        term = search_term.strip()
        try:
            uuid.UUID(term)
        except ValueError:
            return queryset.filter(sha256__startswith=term.lower()) if term else queryset, False
        return queryset.filter(id=term), False

    actions = ("requeue_selected", "fail_selected", "cancel_queued_selected", "purge_image_selected")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "queue_state": selectors.queue_state()}
        return super().changelist_view(request, extra_context=extra_context)

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("jobs.operate_job")

    @admin.action(description="Requeue selected jobs (stuck, queued or failed)", permissions=["operate"])
    def requeue_selected(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        done = operators.job_requeue(
            job_ids=ids, statuses=(JobStatus.QUEUED, JobStatus.IN_PROGRESS, JobStatus.FAILED)
        )
        # One event per job requeued; one without a job when none was (the attempt is on record).
        details = {"requeued": len(done), "selected": len(ids)}
        audit_write(
            actor=actor_from_request(request), action="job.requeued", job_ids=done or [None], details=details
        )
        self.message_user(request, f"Requeued {len(done)} of {len(ids)} jobs.")

    @admin.action(description="Fail selected jobs (queued or stuck)", permissions=["operate"])
    def fail_selected(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        n = operators.job_fail_by_operator(job_ids=ids, reason=f"failed by {request.user} in the admin")
        # The jobs the admin acted on; details say how many were still queued or running.
        details = {"failed": n, "selected": len(ids)}
        audit_write(
            actor=actor_from_request(request), action="job.failed_by_operator", job_ids=ids, details=details
        )
        self.message_user(request, f"Failed {n} of {len(ids)} jobs.")

    @admin.action(description="Cancel selected jobs (queued)", permissions=["operate"])
    def cancel_queued_selected(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        reason = f"Cancelled by {request.user} in the admin before it ran."
        done = operators.job_cancel_queued(job_ids=ids, reason=reason)
        details = {"cancelled": len(done), "selected": len(ids)}
        audit_write(
            actor=actor_from_request(request),
            action="job.cancelled_by_operator",
            job_ids=done or [None],
            details=details,
        )
        self.message_user(request, f"Cancelled {len(done)} of {len(ids)} jobs (only queued ones are).")

    @admin.action(
        description="Purge the stored image of selected jobs (ended ones; results kept)",
        permissions=["operate"],
    )
    def purge_image_selected(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True))
        done = deletion.images_delete(ids)
        details = {"purged": len(done), "selected": len(ids), "via": "admin"}
        audit_write(
            actor=actor_from_request(request),
            action="job.image_purged",
            job_ids=done or [None],
            details=details,
        )
        self.message_user(request, f"Purged the stored image of {len(done)} of {len(ids)} jobs.")

    @admin.display(description="sha256", ordering="sha256")
    def sha256_prefix(self, obj: Job) -> str:
        return obj.sha256[:12]

    @admin.display(description="reference")
    def reference_shown(self, obj: Job) -> str:
        """The client's reference, opened for the operator's list (never logged)."""
        return obj.reference or "—"

    @admin.display(description="weights")
    def weights(self, obj: Job) -> str:
        """`untrained` where the result came from the fallback weights (no clinical meaning)."""
        result = getattr(obj, "result", None) if obj.status == "SUCCEEDED" else None
        if result is None:
            return "—"
        return str((result.provenance or {}).get("weights") or "—")

    @admin.display(description="duration")
    def duration(self, obj: Job) -> str:
        ms = obj.duration_ms
        return "—" if ms is None else f"{ms:,.0f} ms"


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("worker_id", "hostname", "pid", "model_version", "started_at", "last_seen_at")
    readonly_fields = [f.name for f in WorkerHeartbeat._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
