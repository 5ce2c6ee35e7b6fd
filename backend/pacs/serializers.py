"""A job's PACS deliveries as GET /api/v1/jobs/{id} shows them (its `pacs` list)."""

from __future__ import annotations

from rest_framework import serializers

from backend.pacs.models import PacsDeliveryStatus


class PacsAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    duration_ms = serializers.FloatField()
    dimse_status = serializers.IntegerField(
        allow_null=True, help_text="The PACS's C-STORE response status (0: success); null: none came."
    )
    error = serializers.CharField(
        help_text="connect_error, association_rejected, no_response, dimse_0xA700, ...; empty: stored."
    )
    sent = serializers.IntegerField(help_text="Objects the PACS stored in this attempt (SR, SC).")


class PacsDeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    destination = serializers.CharField(source="destination_name", help_text="The destination's name.")
    status = serializers.ChoiceField(choices=PacsDeliveryStatus.values)
    created_at = serializers.DateTimeField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    attempts = PacsAttemptSerializer(many=True, source="attempt_log.all")
