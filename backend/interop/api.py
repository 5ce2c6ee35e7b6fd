"""GET /api/v1/jobs/{id}/sr.dcm and /fhir: a job's result as DICOM SR or as a FHIR DiagnosticReport.

Scoped like the job's detail view (another client's job is 404); errors keep the one JSON shape
whatever the Accept header asked for. highdicom and fhir.resources (about a second of imports)
are loaded by the first report asked for, not by the URL configuration every process loads.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from backend.audit.actors import actor_from_request
from backend.audit.services import audit_read
from backend.dicomnet.returnpath import return_path_for
from backend.interop import schema
from backend.jobs import selectors
from backend.jobs.throttling import ClientRateThrottle


class _ReportApi(APIView):
    throttle_classes = [ClientRateThrottle]

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # The success answer is not rendered (DICOM or FHIR bytes); errors are always JSON, even
        # for a client that asks only for application/dicom.
        return super().perform_content_negotiation(request, force=True)


class JobSrApi(_ReportApi):
    @extend_schema(**schema.SR)
    def get(self, request: Request, job_id: str) -> HttpResponse:
        from backend.interop import sr

        job = selectors.job_get(client=request.user, job_id=job_id)
        body = sr.to_bytes(sr.build_sr(job=job, return_path=return_path_for(job)))
        audit_read(
            actor=actor_from_request(request), action="job.read", job_id=job.id, details={"as": "dicom-sr"}
        )
        response = HttpResponse(body, content_type=schema.DICOM_MEDIA_TYPE)
        response["Content-Disposition"] = f'attachment; filename="{job.id}-sr.dcm"'
        return response


class JobFhirApi(_ReportApi):
    @extend_schema(**schema.FHIR)
    def get(self, request: Request, job_id: str) -> HttpResponse:
        from backend.interop import fhir

        job = selectors.job_get(client=request.user, job_id=job_id)
        body = fhir.to_json(fhir.build_diagnostic_report(job=job, return_path=return_path_for(job)))
        audit_read(
            actor=actor_from_request(request), action="job.read", job_id=job.id, details={"as": "fhir"}
        )
        return HttpResponse(body, content_type=schema.FHIR_MEDIA_TYPE)
