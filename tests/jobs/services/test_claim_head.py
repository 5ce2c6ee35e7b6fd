"""The claim's bounded head (claim_order.head_cte) gives exactly the whole order's first rows.

On PostgreSQL the claim ranks only each client's first jobs of each priority, so that its cost
does not grow with the queue (docs/scaling.md). Here, for queues hypothesis draws (clients,
priorities, ages across the promotion cut-off, retry back-offs), the first `depth` jobs of the
bounded order equal those of the whole order, in the same order; and the claim itself fills its
batch past rows other claimers hold.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from backend.clients.models import Client
from backend.jobs.claim_order import head_cte, head_params, waiting_cte, waiting_params
from backend.jobs.models import Job, JobStatus, Priority
from backend.jobs.services import claims
from tests.factories import client_and_key, make_jobs

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'", reason="the bounded head is PostgreSQL's (LATERAL)"
    ),
]

MODEL = "m1"
PROMOTION_S = 600

job_st = st.tuples(
    st.integers(0, 3),  # client
    st.sampled_from([Priority.STAT, Priority.ROUTINE]),
    st.integers(0, 1200),  # age in seconds: either side of the promotion cut-off
    st.sampled_from([None, -30, 30]),  # available_at: none, past, future (a retry's back-off)
)


def _order(cte: str, params: list, depth: int) -> list[uuid.UUID]:
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH " + cte + " SELECT id FROM waiting ORDER BY urgency, turn, created_at, id LIMIT %s",
            [*params, depth],
        )
        return [row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(row[0]) for row in cursor.fetchall()]


@pytest.fixture
def clients(db) -> list[Client]:
    return [client_and_key(name=f"head-{i}")[0] for i in range(4)]


def test_the_bounded_head_orders_as_the_whole_queue(clients, settings):
    settings.PRIORITY_PROMOTION_SECONDS = PROMOTION_S

    @hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(jobs=st.lists(job_st, min_size=1, max_size=60), depth=st.integers(1, 12))
    def check(jobs, depth):
        now = timezone.now()
        with transaction.atomic():
            Job.objects.all().delete()
            rows = [
                Job(
                    client=clients[c],
                    priority=p,
                    sha256=uuid.uuid4().hex * 2,
                    model_version=MODEL,
                    status=JobStatus.QUEUED,
                    available_at=None if avail is None else now + timedelta(seconds=avail),
                )
                for c, p, _age, avail in jobs
            ]
            Job.objects.bulk_create(rows)
            for row, (_c, _p, age, _a) in zip(rows, jobs, strict=True):
                # Distinct ages (ties broken by id would differ only in the tie-break).
                Job.objects.filter(id=row.id).update(
                    created_at=now - timedelta(seconds=age, microseconds=rows.index(row))
                )
            whole = _order(waiting_cte(attempts="= 0"), waiting_params(model_version=MODEL, now=now), depth)
            head = _order(
                head_cte(attempts="= 0"), head_params(model_version=MODEL, now=now, depth=depth), depth
            )
        assert head == whole

    check()


def test_a_claim_fills_its_batch_past_rows_another_claimer_holds(settings):
    """Another transaction holds the first rows of the only client's queue: the claim takes the
    ones behind them, a full batch, rather than coming back short."""
    settings.CLIENT_MAX_QUEUED_JOBS = 0
    settings.MAX_QUEUE_DEPTH = 0
    jobs = make_jobs(40)
    model_version = jobs[0].model_version
    held = sorted(jobs, key=lambda j: j.created_at)[:8]
    from django.db import connections

    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(
                "SELECT id FROM jobs_job WHERE id = ANY(%s::uuid[]) FOR UPDATE", [[str(j.id) for j in held]]
            )
            batch = claims.job_claim_batch(worker_id="w2", model_version=model_version, max_size=8)
            cursor.execute("ROLLBACK")
    finally:
        other.close()
    assert len(batch.jobs) == 8
    assert not {j.id for j in held} & set(batch.job_ids)


def test_a_claim_takes_rows_behind_a_head_that_other_claimers_hold_entirely(settings):
    """More claimers at once than the head is deep: the claim still fills its batch from the rows
    behind (without fair turns for this one claim) instead of coming back empty."""
    settings.CLIENT_MAX_QUEUED_JOBS = 0
    settings.MAX_QUEUE_DEPTH = 0
    settings.CLAIM_HEAD_FACTOR = 4
    jobs = make_jobs(20)
    model_version = jobs[0].model_version
    head = sorted(jobs, key=lambda j: j.created_at)[: 2 * settings.CLAIM_HEAD_FACTOR]  # the whole head
    from django.db import connections

    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(
                "SELECT id FROM jobs_job WHERE id = ANY(%s::uuid[]) FOR UPDATE", [[str(j.id) for j in head]]
            )
            batch = claims.job_claim_batch(worker_id="w3", model_version=model_version, max_size=2)
            cursor.execute("ROLLBACK")
    finally:
        other.close()
    assert len(batch.jobs) == 2
    assert not {j.id for j in head} & set(batch.job_ids)
