"""The example Grafana dashboard asks only for series that cxrq exports."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import ROOT

pytestmark = pytest.mark.django_db


def test_every_series_the_dashboard_queries_is_exported(client):
    from backend.metrics.uploads import _uploads
    from worker import metrics  # noqa: F401 - the worker's series, in this process's registry

    _uploads()  # the upload counter exists from the first upload on
    client.get("/api/v1/health")  # django-prometheus's per-view series exist from a first request
    # Families, not samples: a labelled series with nothing in it yet is still exported.
    exported = {f.name for f in text_string_to_metric_families(client.get("/metrics").content.decode())}

    dashboard = json.loads((ROOT / "docs" / "grafana" / "cxrq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    asked = {
        re.sub(r"_(bucket|sum|count|total)$", "", name)
        for expr in exprs
        for name in re.findall(r"\b(?:cxrq|django)_[a-z0-9_]+", expr)
    }
    assert asked, "no queries found"
    assert asked - exported == set()
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {"${DS_PROMETHEUS}"}
