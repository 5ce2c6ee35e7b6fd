"""Reads about DICOM senders."""

from __future__ import annotations

from backend.dicomnet.models import DicomSender


def enabled_sender_hosts() -> list[str]:
    """Every enabled sender's `allowed_host` ("" where it may connect from anywhere): the receiver
    refuses at accept an address none of them could be (backend/dicomnet/gate.py may_be_sender)."""
    return list(DicomSender.objects.filter(enabled=True).values_list("allowed_host", flat=True))
