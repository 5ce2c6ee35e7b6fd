"""Admin: every webhook delivery with its attempts (read-only), also shown on its job's page."""

from __future__ import annotations

from django.contrib import admin

from backend.webhooks.models import WebhookAttempt, WebhookDelivery


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "response_code", "error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class WebhookDeliveryInline(admin.TabularInline):
    """On the job's page: where its end was announced and how that went."""

    model = WebhookDelivery
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "event", "url", "status", "attempts", "last_error", "next_attempt_at", "finished_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "event", "status", "attempts", "last_error", "created_at", "finished_at")
    list_filter = ("status", "event", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=id", "=job__id")
    ordering = ("-created_at",)
    list_select_related = ("job",)
    inlines = (WebhookAttemptInline,)
    exclude = ("payload",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields if f.name != "payload"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_search_results(self, request, queryset, search_term):
        import uuid

        term = search_term.strip()
        try:
            key = uuid.UUID(term)
        except ValueError:
            return (queryset.none() if term else queryset), False
        return queryset.filter(id=key) | queryset.filter(job_id=key), False
