"""STAT before routine in every claim, fair share within each, routine work never starved for good."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from backend.jobs.models import Job, Priority
from backend.jobs.services import intake
from tests.factories import (
    assert_error,
    claim,
    client_and_key,
    default_client,
    make_jobs,
    png_bytes,
    post_image,
)

pytestmark = pytest.mark.django_db


def _job(seed: int, priority: str, client=None) -> Job:
    upload = SimpleUploadedFile(f"{seed}.png", png_bytes(seed=seed))
    return intake.job_create(client=client or default_client(), upload=upload, priority=priority).job


def test_a_stat_job_sent_after_a_flood_of_routine_ones_is_in_the_next_batch(settings):
    settings.CLIENT_MAX_QUEUED_JOBS = 0
    make_jobs(30)
    urgent = _job(500, "stat")
    assert urgent.id in claim(8).job_ids


def test_stat_first_then_clients_take_turns_within_each_priority(settings):
    settings.CLIENT_MAX_QUEUED_JOBS = 0
    a, _ = client_and_key(name="hospital-a")
    b, _ = client_and_key(name="hospital-b")
    routine_a = [_job(i, "routine", a) for i in range(6)]
    stat_a = [_job(100 + i, "stat", a) for i in range(3)]
    stat_b = _job(200, "stat", b)
    routine_b = _job(300, "routine", b)
    batch = set(claim(5).job_ids)
    # The four STAT jobs, B's taking its turn beside A's first, then the oldest routine turn.
    assert {j.id for j in stat_a} | {stat_b.id} <= batch
    assert len(batch & ({j.id for j in routine_a} | {routine_b.id})) == 1


def test_a_routine_job_waiting_past_the_promotion_age_goes_before_newer_stat_work(settings):
    settings.PRIORITY_PROMOTION_SECONDS = 60
    old = _job(1, "routine")
    Job.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(seconds=120))
    fresh_stat = [_job(10 + i, "stat") for i in range(3)]
    assert claim(1).job_ids == [old.id]
    assert set(claim(3).job_ids) == {j.id for j in fresh_stat}


def test_priority_is_a_form_field_echoed_back_and_validated(api):
    created = post_image(api, png_bytes(seed=1), fields={"priority": "stat"}).json()
    assert created["priority"] == "stat"
    assert post_image(api, png_bytes(seed=2)).json()["priority"] == "routine"
    assert_error(post_image(api, png_bytes(seed=3), fields={"priority": "asap"}), 400, "invalid_priority")
    assert Job.objects.count() == 2


def test_the_same_image_sent_again_as_stat_moves_its_queued_job_up(api):
    first = post_image(api, png_bytes(seed=4)).json()
    again = post_image(api, png_bytes(seed=4), fields={"priority": "stat"}).json()
    assert again["id"] == first["id"] and again["priority"] == "stat"
    assert Job.objects.get(id=first["id"]).priority == Priority.STAT
