"""STAT before routine in every claim, fair share within each, routine work never starved for good."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from backend.jobs.models import Job, Priority
from backend.jobs.services import claims, intake
from backend.jobs.services.claims import InferenceOutcome
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


def test_a_queued_job_says_how_many_jobs_are_ahead_of_it_in_the_claim_order(api, anonymous_api, settings):
    settings.CLIENT_MAX_QUEUED_JOBS = 0
    mine = [post_image(api, png_bytes(seed=50 + i)).json()["id"] for i in range(3)]
    _, key = client_and_key(name="hospital-b")
    other = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    theirs = post_image(anonymous_api, png_bytes(seed=60), **other).json()["id"]
    stat = post_image(api, png_bytes(seed=70), fields={"priority": "stat"}).json()["id"]

    def ahead(job_id, headers=None):
        return (
            api.get(f"/api/v1/jobs/{job_id}").json()["queue"]["jobs_ahead"]
            if headers is None
            else (anonymous_api.get(f"/api/v1/jobs/{job_id}", **headers).json()["queue"]["jobs_ahead"])
        )

    assert ahead(stat) == 0  # STAT first
    assert ahead(mine[0]) == 1  # after the STAT job
    assert ahead(theirs, other) == 2  # B's first turn: after the STAT job and A's first
    assert [ahead(j) for j in mine[1:]] == [3, 4]
    body = api.get(f"/api/v1/jobs/{mine[0]}").json()
    assert body["queue"]["eta_seconds"] is None  # no live worker: no estimate
    assert body["queue"]["state"] == "no_worker"
    batch = claim(2)  # the STAT job and A's first
    outcomes = [
        InferenceOutcome(job_id=i, probabilities={}, provenance={}, timings={}) for i in batch.job_ids
    ]
    claims.job_store_results(batch=batch, outcomes=outcomes)
    assert api.get(f"/api/v1/jobs/{mine[0]}").json()["queue"] is None  # ended: no place in the queue
    standing = api.get(f"/api/v1/jobs/{mine[1]}").json()["queue"]
    # Turns are counted in the queue as it is now: A's next job and B's first share the first
    # turn, and A's is older.
    assert standing["jobs_ahead"] == 0
    # Jobs finished lately are no estimate while no worker is live (tests/jobs/test_queue_standing.py):
    # the old rate stays, for compatibility, as finished_per_second.
    assert standing["eta_seconds"] is None and standing["state"] == "no_worker"
    assert standing["finished_per_second"] == round(2 / settings.ETA_WINDOW_SECONDS, 3)
