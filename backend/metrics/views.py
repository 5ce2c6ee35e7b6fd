"""GET /metrics: Prometheus's text format (or OpenMetrics, when the scraper asks for it).

What one scrape returns, whichever web process answers it: every web process's counters and
histograms (django-prometheus's requests and latencies, cxrq_uploads_total), summed from the
server's metrics folder, plus the series read from the database (collectors.py). Without a
folder (a single process: tests, runserver) the process's own registry stands in for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse, JsonResponse

from backend.core.exception_handler import error_body
from backend.core.views import read_only
from backend.metrics import access, multiprocess

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# prometheus_client is imported in the functions, not here: Django's system checks import the
# URLconf, and so this module, in Celery's main process before it has chosen its metrics folder.


class _ThisProcess:
    """The process's default registry, as one collector of the scrape's registry."""

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        from prometheus_client import REGISTRY

        return REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from backend.metrics.collectors import DatabaseCollector

    registry = CollectorRegistry()
    path = multiprocess.directory()
    if path is not None:
        MultiProcessCollector(registry, path=str(path))
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector())
    return registry


def refused(refusal: access.Refusal) -> JsonResponse:
    response = JsonResponse(error_body(refusal.code, refusal.message), status=refusal.status)
    for name, value in refusal.headers.items():
        response[name] = value
    return response


@read_only
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = access.refusal(
        remote_addr=request.META.get("REMOTE_ADDR", ""),
        authorization=request.headers.get("Authorization", ""),
    )
    if refusal is not None:
        return refused(refusal)
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(scrape_registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
