"""GET /api/v1/dicom/unscored: what a client's DICOM senders sent that was not scored, and why."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.audit.actors import actor_from_request
from backend.audit.services import audit_read
from backend.dicomnet import selectors
from backend.dicomnet.models import UnscoredInstance, UnscoredReason
from backend.jobs.api import JobPagination
from backend.jobs.schema import AUTH_ERRORS, EDGE_ERRORS, Error
from backend.jobs.throttling import ClientRateThrottle


class UnscoredOutputSerializer(serializers.ModelSerializer):
    reason = serializers.ChoiceField(
        choices=UnscoredReason.choices,
        help_text="not_chest_xray (which attribute: Modality, BodyPartExamined, ViewPosition, SOPClassUID), "
        "not_an_image (SR, presentation state, ...), unsupported_image (multi-frame, colour, burned-in "
        "annotation, ...), own_output (cxrq's own SR or Secondary Capture), duplicate (an image already "
        "scored: job_id).",
    )
    job_id = serializers.UUIDField(allow_null=True, help_text="For a duplicate: the job that scored it.")
    instance_key = serializers.CharField(
        help_text="Keyed hash (HMAC-SHA256) of the SOP Instance UID: the UID itself is not kept."
    )
    study_key = serializers.CharField(
        help_text="Keyed hash of the Study Instance UID: equal for one study's instances; empty if unknown."
    )

    class Meta:
        model = UnscoredInstance
        fields = (
            "id",
            "reason",
            "attribute",
            "value",
            "detail",
            "sop_class_uid",
            "sop_class",
            "calling_ae_title",
            "instance_key",
            "study_key",
            "job_id",
            "received_at",
            "last_received_at",
            "times_received",
        )


def _error(description: str, code: str) -> OpenApiResponse:
    example = OpenApiExample(
        code, value={"error": {"code": code, "message": "…", "details": {}}}, response_only=True
    )
    return OpenApiResponse(response=Error, description=f"{description} Code: `{code}`.", examples=[example])


_EXAMPLE = {
    "id": 41,
    "reason": "not_chest_xray",
    "attribute": "ViewPosition",
    "value": "LL",
    "detail": "view_not_accepted",
    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1",
    "sop_class": "Computed Radiography Image Storage",
    "calling_ae_title": "ORTHANC",
    "instance_key": "3f5c…",
    "study_key": "9b1e…",
    "job_id": None,
    "received_at": "2026-12-07T15:30:00Z",
    "last_received_at": "2026-12-07T15:30:00Z",
    "times_received": 1,
}

UNSCORED_LIST = {
    "operation_id": "dicom_unscored_list",
    "summary": "Instances the caller's DICOM senders sent that were not scored, and why",
    "description": "A PACS sends whole studies; cxrq answers every well-formed instance with success and "
    "scores only chest X-rays it accepts. Each other instance is listed here (one row per instance, "
    "updated when sent again), last received first, for CXRQ_DICOM_UNSCORED_RETENTION_DAYS. No patient "
    "data and no UID: instances and studies are named by keyed hashes.",
    "parameters": [
        OpenApiParameter(
            "reason", OpenApiTypes.STR, enum=list(UnscoredReason.values), description="Only these."
        ),
        OpenApiParameter("page", OpenApiTypes.INT),
        OpenApiParameter("page_size", OpenApiTypes.INT, description="Up to 500; 50 by default."),
    ],
    "responses": {
        200: OpenApiResponse(
            inline_serializer(
                "UnscoredPage",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": UnscoredOutputSerializer(many=True),
                },
            ),
            examples=[
                OpenApiExample(
                    "a page",
                    value={"count": 1, "next": None, "previous": None, "results": [_EXAMPLE]},
                    response_only=True,
                )
            ],
        ),
        400: _error("A reason that is not one of the listed values, or a bad page.", "invalid_reason"),
        404: _error("A page past the last.", "not_found"),
        **AUTH_ERRORS,
        **EDGE_ERRORS,
    },
}


class UnscoredListApi(APIView):
    throttle_classes = [ClientRateThrottle]

    @extend_schema(**UNSCORED_LIST)
    def get(self, request: Request) -> Response:
        reason = request.query_params.get("reason")
        qs = selectors.unscored_list(client=request.user, reason=reason)
        paginator = JobPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        data = UnscoredOutputSerializer(page, many=True).data
        audit_read(
            actor=actor_from_request(request),
            action="dicom.unscored_listed",
            details={"reason": reason or "", "returned": len(data)},
        )
        return paginator.get_paginated_response(data)
