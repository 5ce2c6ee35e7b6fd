"""Admin: DICOM senders (edit), and which jobs keep a return path (read-only, never its PHI)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from backend.dicomnet.models import DicomSender, ReturnPath, UnscoredInstance


@admin.register(DicomSender)
class DicomSenderAdmin(admin.ModelAdmin):
    list_display = (
        "ae_title",
        "client",
        "priority",
        "allowed_host",
        "enabled",
        "return_path_delete_after_delivery",
    )
    list_filter = ("enabled", "priority", "client")
    search_fields = ("ae_title", "client__name")
    autocomplete_fields = ("client",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(ReturnPath)
class ReturnPathAdmin(admin.ModelAdmin):
    """Whether a job came over DICOM and will be returned there. The sealed PHI is not a field
    here: the admin shows who sent it and with which key it is sealed, nothing it holds."""

    list_display = (
        "job_link",
        "calling_ae_title",
        "peer_address",
        "key_id",
        "delete_after_delivery",
        "created_at",
    )
    list_filter = ("calling_ae_title", "delete_after_delivery")
    search_fields = ("job__id",)
    fields = (
        "job_link",
        "sender",
        "calling_ae_title",
        "peer_address",
        "key_id",
        "delete_after_delivery",
        "created_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="job")
    def job_link(self, obj: ReturnPath) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:jobs_job_change", args=[obj.job_id]), obj.job_id
        )


@admin.register(UnscoredInstance)
class UnscoredInstanceAdmin(admin.ModelAdmin):
    """What senders sent that was not scored, and why. Read-only: the receiver writes these rows.
    The instance and study are keyed hashes; no patient data is kept."""

    list_display = (
        "last_received_at",
        "client",
        "calling_ae_title",
        "reason",
        "attribute",
        "value",
        "sop_class",
        "times_received",
    )
    list_filter = ("reason", "attribute", "client")
    search_fields = ("calling_ae_title", "instance_key", "study_key")
    date_hierarchy = "last_received_at"
    list_select_related = ("client",)
    readonly_fields = [field.name for field in UnscoredInstance._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
