"""Admin: DICOM destinations (edit), every PACS delivery with its attempts (read-only), and the
deliveries inline on their job's page (PacsDeliveryInline, listed in backend/jobs/admin.py)."""

from __future__ import annotations

import uuid

from django.contrib import admin

from backend.pacs.models import DicomDestination, PacsAttempt, PacsDelivery


@admin.register(DicomDestination)
class DicomDestinationAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "client",
        "ae_title",
        "host",
        "port",
        "calling_ae_title",
        "send_secondary_capture",
        "enabled",
    )
    list_filter = ("enabled", "send_secondary_capture", "client")
    search_fields = ("name", "ae_title", "host", "client__name")
    autocomplete_fields = ("client",)
    readonly_fields = ("created_at", "updated_at")


class PacsAttemptInline(admin.TabularInline):
    model = PacsAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "dimse_status", "error", "sent")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class PacsDeliveryInline(admin.TabularInline):
    """On the job's page: which PACS its result went to and how that went."""

    model = PacsDelivery
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "destination_name", "status", "attempts", "last_error", "next_attempt_at", "finished_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PacsDelivery)
class PacsDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "job",
        "destination_name",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "destination_name", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=id", "=job__id")
    ordering = ("-created_at",)
    list_select_related = ("job",)
    inlines = (PacsAttemptInline,)
    readonly_fields = [f.name for f in PacsDelivery._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        try:
            key = uuid.UUID(term)
        except ValueError:
            return (queryset.none() if term else queryset), False
        return queryset.filter(id=key) | queryset.filter(job_id=key), False
