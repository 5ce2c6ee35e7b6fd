"""Reads about DICOM senders and the instances they sent that were not scored. What a client asks
for is scoped by its client here, never in a view."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, QuerySet

from backend.clients.models import Client
from backend.core.exceptions import ApplicationError
from backend.dicomnet.models import DicomSender, UnscoredInstance, UnscoredReason, UnscoredTally


class InvalidUnscoredReason(ApplicationError):
    code = "invalid_reason"
    status_code = 400
    default_message = "Unknown reason: use one of the listed values."


def enabled_sender_hosts() -> list[str]:
    """Every enabled sender's `allowed_host` ("" where it may connect from anywhere): the receiver
    refuses at accept an address none of them could be (backend/dicomnet/gate.py may_be_sender)."""
    return list(DicomSender.objects.filter(enabled=True).values_list("allowed_host", flat=True))


def unscored_list(*, client: Client, reason: str | None = None) -> QuerySet[UnscoredInstance]:
    """The client's received instances that were not scored, last received first; only its own.
    reason: only that reason (InvalidUnscoredReason for a name that is not one)."""
    qs = UnscoredInstance.objects.filter(client=client).order_by("-last_received_at", "-id")
    if reason:
        if reason not in UnscoredReason.values:
            raise InvalidUnscoredReason(
                details={"reason": reason[:32], "accepted": list(UnscoredReason.values)}
            )
        qs = qs.filter(reason=reason)
    return qs


def unscored_counts(*, since: datetime | None = None) -> dict[str, int]:
    """Rows kept, by reason (every reason present), received again or first since `since` if given;
    one GROUP BY."""
    qs = UnscoredInstance.objects.order_by()
    if since is not None:
        qs = qs.filter(last_received_at__gte=since)
    found = dict(qs.values_list("reason").annotate(n=Count("id")))
    return {reason: found.get(reason, 0) for reason in UnscoredReason.values}


def unscored_tally() -> dict[str, int]:
    """Instances not scored since the database was made, by reason (every reason present): the
    counter /metrics exposes, which retention does not lower."""
    found = dict(UnscoredTally.objects.values_list("reason", "count"))
    return {reason: found.get(reason, 0) for reason in UnscoredReason.values}
