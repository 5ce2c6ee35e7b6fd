"""django-prometheus's request middleware, made safe for what a client may send.

Two things come from the client and reach it unchecked: Content-Length, which it parses with
int() before any view runs (a malformed one was a 500; the upload view answers it with 400
invalid_content_length), and the request method, which some of its series take as a label as
sent (one series per made-up method). Here the first is not measured and the second is one of
the standard methods or "<invalid method>", as its other series already do.
"""

from __future__ import annotations

from typing import Any

from django_prometheus import middleware
from django_prometheus.utils import Time


class PrometheusBeforeMiddleware(middleware.PrometheusBeforeMiddleware):
    pass


class PrometheusAfterMiddleware(middleware.PrometheusAfterMiddleware):
    def process_request(self, request: Any) -> None:
        try:
            super().process_request(request)
        except ValueError:  # Content-Length is not a number: the request is still timed
            request.prometheus_after_middleware_event = Time()

    def label_metric(self, metric: Any, request: Any, response: Any = None, **labels: Any) -> Any:
        if "method" in labels:
            labels["method"] = self._method(request)
        return super().label_metric(metric, request, response, **labels)
