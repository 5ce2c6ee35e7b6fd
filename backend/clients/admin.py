"""Clients and keys in the admin. A key's value is never shown: only its prefix, state and scope.
New keys are made with `manage.py client_keys add` (or create_client), which prints them once."""

from django.contrib import admin

from backend.clients.models import ApiKey, Client, Organisation


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "scope", "created", "expiry_date", "last_used_at", "revoked")
    readonly_fields = ("prefix", "name", "scope", "created", "last_used_at")

    def has_add_permission(self, request, obj=None):
        return False  # a key made here could not be shown to anyone: use client_keys add


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ("name", "share_inference_cache", "created_at")
    list_filter = ("share_inference_cache",)
    search_fields = ("name",)


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    list_display = ("name", "organisation", "upload_rate", "read_rate", "max_queued_jobs", "created_at")
    list_filter = ("organisation",)
    search_fields = ("name", "=id")
    fields = (
        "name",
        "organisation",
        "upload_rate",
        "read_rate",
        "max_queued_jobs",
        "webhook_allowed_hosts",
        "webhook_payload_format",
        "reference_from_dicom",
        "image_retention_days",
        "result_retention_days",
        "eligibility",
    )
    inlines = (ApiKeyInline,)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "client", "name", "scope", "created", "expiry_date", "last_used_at", "revoked")
    list_filter = ("scope", "revoked", "client")
    search_fields = ("prefix", "name", "client__name")
    readonly_fields = ("prefix", "client", "name", "scope", "created", "last_used_at")
    fields = ("prefix", "client", "name", "scope", "created", "expiry_date", "last_used_at", "revoked")

    def has_add_permission(self, request):
        return False
