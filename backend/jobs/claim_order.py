"""The order in which queued jobs are claimed, written once: the batch claim
(services/claims.py) takes from the front of it, and a queued job's place in the
queue (selectors.queue_standing) is counted in it.

STAT before routine (a routine job waiting longer than PRIORITY_PROMOTION_SECONDS counts as
STAT); within a priority, clients take turns (each job's turn is its rank within its client,
oldest first); oldest first among equal turns. `waiting_cte` is the CTE named `waiting`
(id, created_at, urgency, turn) over the claimable jobs; `waiting_params` its parameters.

`head_cte` is the same order over a bounded head of the queue, for the claim on PostgreSQL: only
each client's first `depth` jobs of each priority (two index probes per client, the
`job_claim_fresh_idx`) are ranked, not every queued job. Its first `depth` rows are exactly
`waiting`'s first `depth` rows: a job among them has a turn of at most `depth` within its client
and urgency, so at most `depth - 1` older jobs of its client and priority are ahead of it (a
routine job promoted by age has only older routine jobs ahead of it within its client, and they
are promoted too); tests/jobs/services/test_claim_head.py checks the two orders agree. The
claim's cost is then O(clients x depth), not O(queue): 100,000 queued jobs cost what 2,000 do
(docs/scaling.md). SQLite has no LATERAL; the embedded default keeps `waiting`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection

from backend.jobs.models import JobStatus, Priority

_WAITING_CTE = """
ranked AS (
    SELECT id, client_id, created_at,
           CASE WHEN priority = {stat} OR created_at <= %s THEN {stat} ELSE priority END AS urgency
    FROM jobs_job
    WHERE status = '{queued}' AND model_version = %s
      AND (available_at IS NULL OR available_at <= %s)
      AND attempts {attempts}
),
waiting AS (
    SELECT id, created_at, urgency,
           row_number() OVER (PARTITION BY urgency, client_id ORDER BY created_at) AS turn
    FROM ranked
)"""


_HEAD_PART = """
        (SELECT id, client_id, created_at, priority FROM jobs_job
         WHERE status = '{queued}' AND model_version = %s AND client_id = c.id AND priority = {priority}
           AND (available_at IS NULL OR available_at <= %s) AND attempts {attempts}
         ORDER BY created_at LIMIT %s)"""

_HEAD_CTE = """
head AS (
    SELECT j.id, j.client_id, j.created_at,
           CASE WHEN j.priority = {stat} OR j.created_at <= %s THEN {stat} ELSE j.priority END AS urgency
    FROM clients_client c
    CROSS JOIN LATERAL ({parts}
    ) j
),
waiting AS (
    SELECT id, created_at, urgency,
           row_number() OVER (PARTITION BY urgency, client_id ORDER BY created_at) AS turn
    FROM head
)"""


def head_cte(*, attempts: str = "IS NOT NULL") -> str:
    """`waiting` over each client's first jobs of each priority only (PostgreSQL: LATERAL). One
    probe per priority, each an equality on the index's priority column, so that the index gives
    the order and the probe reads only the rows it returns."""
    parts = "\n        UNION ALL".join(
        _HEAD_PART.format(queued=JobStatus.QUEUED, priority=int(p), attempts=attempts) for p in Priority
    )
    return _HEAD_CTE.format(stat=int(Priority.STAT), parts=parts)


def head_params(*, model_version: str, now: datetime, depth: int) -> list:
    """`head_cte`'s parameters, in order."""
    promoted_before, model_version, now_ = waiting_params(model_version=model_version, now=now)
    return [promoted_before, *([model_version, now_, depth] * len(Priority))]


def waiting_cte(*, attempts: str = "IS NOT NULL") -> str:
    """The CTE, for jobs whose `attempts` meets this condition (the claim takes retried jobs
    apart from fresh ones)."""
    return _WAITING_CTE.format(stat=int(Priority.STAT), queued=JobStatus.QUEUED, attempts=attempts)


def waiting_params(*, model_version: str, now: datetime) -> list:
    """The CTE's parameters, in order: the promotion cut-off, the model version, now."""
    promoted_before = now - timedelta(seconds=settings.PRIORITY_PROMOTION_SECONDS)
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(promoted_before), model_version, adapt(now)]
