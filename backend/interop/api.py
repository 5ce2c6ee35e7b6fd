"""GET /api/v1/jobs/{id}/sr.dcm and /fhir: a job's result as DICOM SR or as a FHIR DiagnosticReport.

Scoped like the job's detail view (another client's job is 404); errors keep the one JSON shape
whatever the Accept header asked for. highdicom and fhir.resources (about a second of imports)
are loaded by the first report built, not by the URL configuration every process loads.

A report is built once and served from its sealed copy after (store.py); while one client has
CXRQ_REPORT_CLIENT_CONCURRENCY of these requests in progress in a process, its next one is 429
with Retry-After (limits.py), so building cannot take every request thread. Each answer has an
ETag; If-None-Match as RFC 9110 §13.1.2 says (backend/core/conditional.py: `*`, weak comparison).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from backend.audit.actors import actor_from_request
from backend.audit.services import audit_read
from backend.core.conditional import if_none_match
from backend.interop import limits, schema
from backend.interop.models import ReportKind
from backend.interop.store import report_get
from backend.jobs import selectors
from backend.jobs.throttling import ClientRateThrottle


class _ReportApi(APIView):
    throttle_classes = [ClientRateThrottle]
    kind: str
    content_type: str
    audit_as: str

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # The success answer is not rendered (DICOM or FHIR bytes); errors are always JSON, even
        # for a client that asks only for application/dicom.
        return super().perform_content_negotiation(request, force=True)

    def answer(self, request: Request, job_id: str) -> HttpResponse:
        with limits.client_slot(request.user.pk):
            job = selectors.job_get(client=request.user, job_id=job_id)
            stored = report_get(job=job, kind=self.kind)
        audit_read(
            actor=actor_from_request(request), action="job.read", job_id=job.id, details={"as": self.audit_as}
        )
        headers = {"ETag": stored.etag, "Cache-Control": "private, no-cache"}
        if if_none_match(request, stored.etag):
            return HttpResponse(status=304, headers=headers)
        response = HttpResponse(stored.body, content_type=self.content_type, headers=headers)
        self.describe(response, job)
        return response

    def describe(self, response: HttpResponse, job) -> None:
        pass


class JobSrApi(_ReportApi):
    kind = ReportKind.SR
    content_type = schema.DICOM_MEDIA_TYPE
    audit_as = "dicom-sr"

    @extend_schema(**schema.SR)
    def get(self, request: Request, job_id: str) -> HttpResponse:
        return self.answer(request, job_id)

    def describe(self, response: HttpResponse, job) -> None:
        response["Content-Disposition"] = f'attachment; filename="{job.id}-sr.dcm"'


class JobFhirApi(_ReportApi):
    kind = ReportKind.FHIR
    content_type = schema.FHIR_MEDIA_TYPE
    audit_as = "fhir"

    @extend_schema(**schema.FHIR)
    def get(self, request: Request, job_id: str) -> HttpResponse:
        return self.answer(request, job_id)
