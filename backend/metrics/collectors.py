"""Series read from the database when /metrics is scraped: the same answer from every web
process, and nothing to keep in step between them. Each is one aggregate query:

  jobs by status                one GROUP BY status (the claim index leads with status)
  queue depth, oldest queued    one GROUP BY client, priority over QUEUED rows (the queue only)
  worker heartbeats             the heartbeat table (one row per live or lost worker process)
  webhook deliveries by status  one GROUP BY status (the due index leads with status)
  webhook attempt outcomes      the latest METRICS_WEBHOOK_ATTEMPTS_WINDOW attempts, by primary key
  PACS attempt outcomes         the latest METRICS_WEBHOOK_ATTEMPTS_WINDOW PACS attempts, by primary key
  DICOM instances not scored    the tally by reason (one row per reason; retention never lowers it)

A database that does not answer gives cxrq_database_up 0 and none of these, never an error page.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from backend.dicomnet import selectors as dicomnet_selectors
from backend.jobs.models import Job, JobStatus, Priority, WorkerHeartbeat
from backend.pacs import outcomes as pacs_outcomes
from backend.pacs.models import PacsAttempt
from backend.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from backend.webhooks.outcomes import ATTEMPT_OUTCOMES, attempt_outcome

logger = logging.getLogger(__name__)

OTHER_CLIENTS = "other"
# At most this many heartbeat rows become series (the freshest); a row per lost process stays
# until someone removes it, so a long-lived database could otherwise hold many.
MAX_HEARTBEAT_SERIES = 100


class DatabaseCollector:
    def describe(self) -> Iterable[Metric]:
        return []  # no query when the collector is registered; names are known at scrape

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            families = [*self._jobs(), *self._queue(), *self._workers(), *self._webhooks(), self._pacs()]
            families.append(self._dicom_unscored())
        except DatabaseError as exc:
            logger.warning("event=metrics_database_unavailable error=%r", exc)
            yield GaugeMetricFamily(
                "cxrq_database_up", "Whether the metrics queries reached the database.", 0
            )
            return
        yield GaugeMetricFamily("cxrq_database_up", "Whether the metrics queries reached the database.", 1)
        yield from families
        yield GaugeMetricFamily(
            "cxrq_metrics_database_seconds",
            "Time the database queries of this scrape took.",
            time.perf_counter() - started,
        )

    def _jobs(self) -> list[Metric]:
        counts = dict(Job.objects.order_by().values_list("status").annotate(n=Count("*")))
        family = GaugeMetricFamily("cxrq_jobs", "Jobs in the database by status.", labels=["status"])
        for status in JobStatus:
            family.add_metric([status.value.lower()], counts.get(status.value, 0))
        return [family]

    def _queue(self) -> list[Metric]:
        rows = list(
            Job.objects.filter(status=JobStatus.QUEUED)
            .order_by()
            .values_list("client__name", "priority")
            .annotate(n=Count("*"), oldest=Min("created_at"))
        )
        by_client: Tally[str] = Tally()
        depth: Tally[tuple[str, str]] = Tally()
        oldest: dict[str, float] = {}
        now = timezone.now()
        for name, _priority, n, _first in rows:
            by_client[name] += n
        kept = {name for name, _ in by_client.most_common(max(settings.METRICS_MAX_CLIENTS, 0))}
        for name, priority, n, first in rows:
            label = Priority(priority).label
            depth[(label, name if name in kept else OTHER_CLIENTS)] += n
            oldest[label] = max(oldest.get(label, 0.0), (now - first).total_seconds())
        queue = GaugeMetricFamily(
            "cxrq_queue_depth",
            f"Queued jobs by priority and client (the {settings.METRICS_MAX_CLIENTS} clients with most "
            f'queued jobs by name, the rest as client="{OTHER_CLIENTS}").',
            labels=["priority", "client"],
        )
        for (priority, client), n in sorted(depth.items()):
            queue.add_metric([priority, client], n)
        age = GaugeMetricFamily(
            "cxrq_queue_oldest_age_seconds",
            "Age of the oldest queued job by priority (0: none queued).",
            labels=["priority"],
        )
        for priority in Priority:
            age.add_metric([priority.label], round(oldest.get(priority.label, 0.0), 3))
        return [queue, age]

    def _workers(self) -> list[Metric]:
        now = timezone.now()
        rows = list(
            WorkerHeartbeat.objects.order_by("-last_seen_at").values_list("worker_id", "last_seen_at")[
                :MAX_HEARTBEAT_SERIES
            ]
        )
        ages = [(worker_id, max((now - seen).total_seconds(), 0.0)) for worker_id, seen in rows]
        age = GaugeMetricFamily(
            "cxrq_worker_heartbeat_age_seconds",
            "Seconds since each worker process last reported in (a row stays after a crash).",
            labels=["worker_id"],
        )
        for worker_id, seconds in ages:
            age.add_metric([worker_id], round(seconds, 3))
        live = GaugeMetricFamily(
            "cxrq_workers_live",
            "Worker processes that reported in within WORKER_LIVE_SECONDS.",
            sum(1 for _, seconds in ages if seconds <= settings.WORKER_LIVE_SECONDS),
        )
        return [age, live]

    def _webhooks(self) -> list[Metric]:
        counts = dict(WebhookDelivery.objects.order_by().values_list("status").annotate(n=Count("*")))
        deliveries = GaugeMetricFamily(
            "cxrq_webhook_deliveries", "Webhook deliveries by status.", labels=["status"]
        )
        for status in DeliveryStatus:
            deliveries.add_metric([status.value], counts.get(status.value, 0))
        window = max(settings.METRICS_WEBHOOK_ATTEMPTS_WINDOW, 0)
        latest = WebhookAttempt.objects.order_by("-pk").values_list("response_code", "error")[:window]
        outcomes = Tally(attempt_outcome(code, error) for code, error in latest)
        attempts = GaugeMetricFamily(
            "cxrq_webhook_recent_attempts",
            f"Outcomes of the latest {window} webhook attempts (status class, or the kind of error).",
            labels=["outcome"],
        )
        for outcome in ATTEMPT_OUTCOMES:
            attempts.add_metric([outcome], outcomes.get(outcome, 0))
        return [deliveries, attempts]

    def _pacs(self) -> Metric:
        window = max(settings.METRICS_WEBHOOK_ATTEMPTS_WINDOW, 0)
        latest = PacsAttempt.objects.order_by("-pk").values_list("error", flat=True)[:window]
        outcomes = Tally(pacs_outcomes.attempt_outcome(error) for error in latest)
        attempts = GaugeMetricFamily(
            "cxrq_pacs_recent_attempts",
            f"Outcomes of the latest {window} C-STORE attempts to PACS destinations "
            "(stored, a DIMSE failure status, or the kind of error).",
            labels=["outcome"],
        )
        for outcome in pacs_outcomes.ATTEMPT_OUTCOMES:
            attempts.add_metric([outcome], outcomes.get(outcome, 0))
        return attempts

    def _dicom_unscored(self) -> Metric:
        counter = CounterMetricFamily(
            "cxrq_dicom_unscored",
            "Instances the DICOM receiver accepted but did not score, by reason (not_chest_xray, "
            "not_an_image, unsupported_image, own_output, duplicate).",
            labels=["reason"],
        )
        for reason, count in dicomnet_selectors.unscored_tally().items():
            counter.add_metric([reason], count)
        return counter
