"""The order in which queued jobs are claimed, written once: the batch claim
(services/claims.py) takes from the front of it, and a queued job's place in the
queue (selectors.queue_standing) is counted in it.

STAT before routine (a routine job waiting longer than PRIORITY_PROMOTION_SECONDS counts as
STAT); within a priority, clients take turns (each job's turn is its rank within its client,
oldest first); oldest first among equal turns. Parameters, in order: the promotion cut-off,
the model version, now. Format fields: stat, queued, attempts (a condition on attempts).
"""

WAITING_CTE = """
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
