"""Invariants of the job table, checked by `manage.py jobs_check` and by the reliability tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from backend.jobs import selectors
from backend.jobs.models import Job, JobResult, JobStatus


@dataclass
class InvariantReport:
    counts: dict[str, int] = field(default_factory=dict)
    violations: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def as_dict(self) -> dict:
        return {"ok": self.ok, "counts": self.counts, "violations": self.violations}


def check_invariants(*, lease_grace_seconds: float = 0.0, sample: int = 20) -> InvariantReport:
    now = timezone.now()
    report = InvariantReport()
    report.counts = selectors.job_status_counts() | {"results": JobResult.objects.count()}

    def ids(qs) -> list[str]:
        return [str(i) for i in qs.values_list("id", flat=True)[:sample]]

    report.violations["in_progress_without_live_lease"] = ids(
        selectors.expired_leases(now=now, older_than_seconds=lease_grace_seconds)
        | Job.objects.filter(status=JobStatus.IN_PROGRESS).filter(
            Q(lease_expires_at__isnull=True) | Q(claim_token__isnull=True)
        )
    )
    report.violations["succeeded_without_result"] = ids(
        Job.objects.filter(status=JobStatus.SUCCEEDED, result__isnull=True)
    )
    report.violations["result_of_unfinished_job"] = [
        str(i)
        for i in JobResult.objects.exclude(job__status=JobStatus.SUCCEEDED).values_list("job_id", flat=True)[
            :sample
        ]
    ]
    report.violations["attempts_over_max"] = ids(Job.objects.filter(attempts__gt=settings.MAX_ATTEMPTS))
    dupes = (
        Job.objects.exclude(status__in=JobStatus.ended_without_result())
        .values("client", "sha256", "model_version")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    report.violations["dedup_duplicates"] = [f"{d['sha256'][:12]}x{d['n']}" for d in dupes[:sample]]
    report.violations["failed_without_reason"] = ids(
        Job.objects.filter(status=JobStatus.FAILED, error_code="")
    )
    return report
