"""The batch claim: SKIP LOCKED + one UPDATE, constant queries, no double claims, guarded writes."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backend.jobs.models import Job, JobResult, JobStatus
from backend.jobs.services import claims
from backend.jobs.services.claims import InferenceOutcome
from tests.factories import claim, client_and_key, make_jobs


@pytest.mark.django_db
def test_claim_moves_oldest_jobs_to_in_progress_with_a_lease():
    jobs = make_jobs(5)
    batch = claim(3)
    assert [j.id for j in batch.jobs] == [j.id for j in jobs[:3]]
    for job in Job.objects.filter(id__in=batch.job_ids):
        assert job.status == JobStatus.IN_PROGRESS
        assert job.attempts == 1
        assert job.claimed_by == "w1"
        assert job.claim_token == batch.claim_token
        assert job.batch_id == batch.batch_id
        assert job.lease_expires_at > job.started_at
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 2
    assert claim(10).job_ids == [j.id for j in jobs[3:]]
    assert claim(10).jobs == []


@pytest.mark.django_db
def test_claim_uses_a_constant_number_of_queries():
    make_jobs(17)
    counts = {}
    for size in (1, 16):
        with CaptureQueriesContext(connection) as ctx:
            batch = claim(size)
        assert len(batch.jobs) == size
        counts[size] = len([q for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]])
    assert counts[1] == counts[16] <= 3
    # Each claim statement is SELECT ... FOR UPDATE SKIP LOCKED inside one bulk UPDATE:
    # one for a retried job (claimed alone), one for fresh jobs.
    sql = [q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith("WITH")]
    assert 1 <= len(sql) <= 2
    assert all("UPDATE jobs_job" in q for q in sql)
    if connection.vendor == "postgresql":
        assert all("FOR UPDATE OF j SKIP LOCKED" in q for q in sql)


@pytest.mark.django_db
def test_claim_ignores_jobs_of_another_model_version():
    job = make_jobs(1)[0]
    Job.objects.filter(id=job.id).update(model_version="some-other-model")
    assert claim(8).jobs == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_take_the_same_job():
    jobs = make_jobs(60)
    claimed: dict[str, list[uuid.UUID]] = {"a": [], "b": [], "c": []}
    barrier = threading.Barrier(len(claimed))

    def run(name: str) -> None:
        try:
            barrier.wait()
            while batch := claim(4, worker_id=name).jobs:
                claimed[name].extend(j.id for j in batch)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    all_ids = [i for ids in claimed.values() for i in ids]
    assert sorted(all_ids) == sorted(j.id for j in jobs)  # every job, exactly once
    assert len(set(all_ids)) == len(all_ids)
    if connection.vendor == "postgresql":  # SQLite serialises writers: one may take it all
        assert sum(1 for ids in claimed.values() if ids) >= 2  # they really ran side by side
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}


def _outcome(job_id) -> InferenceOutcome:
    return InferenceOutcome(job_id=job_id, probabilities={"a": 0.5}, provenance={}, timings={})


@pytest.mark.django_db
def test_results_are_stored_only_by_the_current_claim_holder():
    make_jobs(2)
    batch = claim(2)
    # The first job's lease expired and it was reclaimed by someone else.
    stolen = batch.jobs[0]
    Job.objects.filter(id=stolen.id).update(claim_token=uuid.uuid4())

    stored = claims.job_store_results(batch=batch, outcomes=[_outcome(j.id) for j in batch.jobs])
    assert stored == [batch.jobs[1].id]
    assert not JobResult.objects.filter(job_id=stolen.id).exists()
    assert Job.objects.get(id=stolen.id).status == JobStatus.IN_PROGRESS
    assert Job.objects.get(id=batch.jobs[1].id).status == JobStatus.SUCCEEDED

    # Idempotent: storing again changes nothing.
    assert claims.job_store_results(batch=batch, outcomes=[_outcome(batch.jobs[1].id)]) == []
    assert JobResult.objects.count() == 1
    assert not claims.job_fail(job_id=batch.jobs[1].id, claim_token=batch.claim_token, code="x", message="")
    assert Job.objects.get(id=batch.jobs[1].id).status == JobStatus.SUCCEEDED


@pytest.mark.django_db
def test_store_results_uses_a_constant_number_of_queries():
    make_jobs(9)
    counts = []
    for size in (1, 8):
        batch = claim(size)
        with CaptureQueriesContext(connection) as ctx:
            claims.job_store_results(batch=batch, outcomes=[_outcome(j.id) for j in batch.jobs])
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


@pytest.mark.django_db
def test_release_returns_jobs_to_the_queue():
    make_jobs(3)
    batch = claim(3)
    assert claims.job_release(job_ids=batch.job_ids, claim_token=batch.claim_token) == 3
    assert set(Job.objects.values_list("status", "attempts")) == {(JobStatus.QUEUED, 0)}
    assert len(claim(3).jobs) == 3


@pytest.mark.django_db
def test_clients_take_turns_so_a_backlog_cannot_starve_another_client():
    """Client A has 30 jobs waiting; client B's one job, submitted after all of them, is in the
    very next batch. Then A's jobs keep their own order."""
    hospital_a = client_and_key(name="hospital-a")[0]
    hospital_b = client_and_key(name="hospital-b")[0]
    backlog = make_jobs(30, client=hospital_a)
    (late,) = make_jobs(1, start=100, client=hospital_b)
    first = claim(4)
    assert late.id in first.job_ids
    assert [j for j in first.job_ids if j != late.id] == [j.id for j in backlog[:3]]
    assert claim(4).job_ids == [j.id for j in backlog[3:7]]


@pytest.mark.django_db
def test_turns_interleave_several_clients_oldest_first():
    clients = [client_and_key(name=f"h{i}")[0] for i in range(3)]
    jobs = {c.name: make_jobs(3, start=10 * i, client=c) for i, c in enumerate(clients)}
    batch = claim(6)
    # Each client's two oldest, whatever the order they were submitted in.
    assert set(batch.job_ids) == {j.id for name in jobs for j in jobs[name][:2]}
