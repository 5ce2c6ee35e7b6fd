"""GET /admin/dashboard/: staff with the jobs view permission (the "job viewers" and "job operators"
groups, superusers). The admin's sign-in sends everyone else to its login page (not staff) or
refuses them (staff without the permission: 403, as the job list does)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from backend.dashboard import charts, selectors
from backend.jobs.models import JobStatus

# The page reloads itself this often (<meta http-equiv="refresh">: no script, nothing to allow).
REFRESH_SECONDS = 15
SUCCEEDED_COLOUR = "#2e7d32"
FAILED_COLOUR = "#c62828"
P50_COLOUR = "#1565c0"
P95_COLOUR = "#ef6c00"


def dashboard(request: HttpRequest) -> TemplateResponse:
    if not request.user.has_perm("jobs.view_job"):
        raise PermissionDenied
    figures = selectors.dashboard()
    throughput, latency = figures["throughput"], figures["latency"]
    throughput_chart = charts.stacked_bars(
        "throughput",
        label=f"Jobs finished per minute over the last hour: {throughput['total']} in all",
        times=throughput["axis"].times,
        series=[
            charts.Series("succeeded", SUCCEEDED_COLOUR, throughput["succeeded"]),
            charts.Series("failed", FAILED_COLOUR, throughput["failed"]),
        ],
        unit="jobs / minute",
    )
    latency_chart = charts.lines(
        "latency",
        label=(
            "End-to-end latency per 5 minutes over the last hour, p50 and p95 in milliseconds"
            f" ({latency['jobs']} jobs)"
        ),
        times=latency["axis"].times,
        series=[
            charts.Series("p50", P50_COLOUR, latency["p50"]),
            charts.Series("p95", P95_COLOUR, latency["p95"]),
        ],
        unit="ms",
    )
    context = {
        **admin.site.each_context(request),
        "title": "Operator dashboard",
        "figures": figures,
        "throughput_chart": throughput_chart,
        "latency_chart": latency_chart,
        "refresh_seconds": REFRESH_SECONDS,
        "failed_status": JobStatus.FAILED.value,
        "queued_status": JobStatus.QUEUED.value,
    }
    return TemplateResponse(request, "admin/cxrq/dashboard.html", context)
