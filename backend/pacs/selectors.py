"""Reads of the PACS deliveries."""

from __future__ import annotations

from django.db.models import QuerySet

from backend.pacs.models import PacsDelivery


def deliveries_for(*, job) -> QuerySet[PacsDelivery]:
    """The job's deliveries with their attempts (two queries; one when there are none)."""
    return (
        PacsDelivery.objects.filter(job_id=job.pk)
        .order_by("created_at", "destination_name")
        .prefetch_related("attempt_log")
    )
