"""The order in which queued jobs are claimed, written once: the batch claim
(services/claims.py) takes from the front of it, and a queued job's place in the
queue (selectors.queue_standing) is counted in it.

STAT before routine (a routine job waiting longer than PRIORITY_PROMOTION_SECONDS counts as
STAT); within a priority, clients take turns (each job's turn is its rank within its client,
oldest first); oldest first among equal turns. `waiting_cte` is the CTE named `waiting`
(id, created_at, urgency, turn) over the claimable jobs; `waiting_params` its parameters.
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


def waiting_cte(*, attempts: str = "IS NOT NULL") -> str:
    """The CTE, for jobs whose `attempts` meets this condition (the claim takes retried jobs
    apart from fresh ones)."""
    return _WAITING_CTE.format(stat=int(Priority.STAT), queued=JobStatus.QUEUED, attempts=attempts)


def waiting_params(*, model_version: str, now: datetime) -> list:
    """The CTE's parameters, in order: the promotion cut-off, the model version, now."""
    promoted_before = now - timedelta(seconds=settings.PRIORITY_PROMOTION_SECONDS)
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(promoted_before), model_version, adapt(now)]
