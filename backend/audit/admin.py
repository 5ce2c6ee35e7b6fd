"""The audit log in the admin: browse and filter; nobody adds, changes or deletes a row."""

from django.contrib import admin

from backend.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = (
        "at",
        "action",
        "actor",
        "client_id",
        "api_key_prefix",
        "user",
        "job_id",
        "address",
        "request_id",
    )
    list_filter = ("action", "actor", ("at", admin.DateFieldListFilter))
    search_fields = ("=job_id", "=client_id", "api_key_prefix", "user", "request_id")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
