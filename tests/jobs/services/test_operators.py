"""Operator actions: requeue and fail by hand."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from backend.jobs.models import Job, JobResult, JobStatus
from backend.jobs.services import claims, intake, operators
from tests.factories import claim, default_client, png_bytes

pytestmark = pytest.mark.django_db


def test_requeue_skips_a_failed_job_that_has_a_newer_live_twin():
    data = png_bytes(seed=77)
    old = intake.job_create(client=default_client(), upload=SimpleUploadedFile("a.png", data)).job
    batch = claim(1)
    claims.job_fail(job_id=old.id, claim_token=batch.claim_token, code="x", message="y")
    new = intake.job_create(client=default_client(), upload=SimpleUploadedFile("a.png", data)).job
    assert new.id != old.id
    assert operators.job_requeue(job_ids=[old.id], statuses=(JobStatus.FAILED,)) == []
    assert Job.objects.get(id=old.id).status == JobStatus.FAILED
    assert not JobResult.objects.exists()
