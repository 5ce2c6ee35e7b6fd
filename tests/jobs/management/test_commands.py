"""The operator commands: jobs_check (invariants) and jobs_requeue."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backend.jobs.models import Job, JobStatus
from tests.factories import claim, expire, make_jobs

pytestmark = pytest.mark.django_db


def test_jobs_check_command_reports_violations():
    out = StringIO()
    make_jobs(1)
    call_command("jobs_check", stdout=out)
    assert json.loads(out.getvalue())["ok"] is True

    batch = claim(1)
    Job.objects.filter(id=batch.job_ids[0]).update(status=JobStatus.SUCCEEDED)  # a success with no result
    with pytest.raises(CommandError):
        call_command("jobs_check", stdout=(out := StringIO()))
    report = json.loads(out.getvalue())
    assert report["violations"]["succeeded_without_result"] == [str(batch.job_ids[0])]


def test_jobs_requeue_command(settings):
    jobs = make_jobs(3)
    batch = claim(3)
    expire(batch)
    Job.objects.filter(id=jobs[0].id).update(lease_expires_at=timezone.now() - timedelta(minutes=10))
    out = StringIO()
    call_command("jobs_requeue", "--stuck-minutes", "5", stdout=out)
    assert "requeued 1 of 1" in out.getvalue()
    assert Job.objects.get(id=jobs[0].id).status == JobStatus.QUEUED

    call_command("jobs_requeue", "--ids", str(jobs[1].id), "--fail", "bad scan", stdout=out)
    failed = Job.objects.get(id=jobs[1].id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        JobStatus.FAILED,
        "failed_by_operator",
        "bad scan",
    )

    # A failed job comes back only when asked, and not over a newer live job for the same bytes.
    call_command("jobs_requeue", "--ids", str(jobs[1].id), "--include-failed", stdout=(out := StringIO()))
    assert "requeued 1 of 1" in out.getvalue()
    assert Job.objects.get(id=jobs[1].id).attempts == 0
    with pytest.raises(CommandError):
        call_command("jobs_requeue")
