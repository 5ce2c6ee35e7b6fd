"""GET /metrics on the web: who may read it, what it says about the database, its formats."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from backend.metrics.collectors import DatabaseCollector
from backend.webhooks.outcomes import attempt_outcome
from tests.factories import assert_error, client_and_key, make_jobs, png_bytes, post_image

pytestmark = pytest.mark.django_db

TOKEN = "t" * 40


def _labels(**labels: str) -> frozenset:
    return frozenset(labels.items())


def test_a_loopback_caller_reads_metrics_where_loopback_is_allowed(client, parse_metrics):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = parse_metrics(response.content.decode())
    assert samples[("cxrq_database_up", frozenset())] == 1
    assert samples[("cxrq_jobs", _labels(status="queued"))] == 0


@pytest.mark.parametrize(
    ("allow_loopback", "token", "remote", "authorization", "status", "code"),
    [
        (False, "", "127.0.0.1", None, 401, "not_authenticated"),  # production without a token
        (False, TOKEN, "127.0.0.1", None, 401, "not_authenticated"),
        (True, TOKEN, "10.1.2.3", None, 401, "not_authenticated"),
        (True, "", "10.1.2.3", None, 403, "permission_denied"),
        (True, TOKEN, "10.1.2.3", "Bearer " + "x" * 40, 401, "authentication_failed"),
        (True, TOKEN, "127.0.0.1", "Bearer wrong", 401, "authentication_failed"),
        (True, TOKEN, "10.1.2.3", f"Api-Key {TOKEN}", 401, "authentication_failed"),
        (True, "", "127.0.0.1", "Bearer anything", 401, "authentication_failed"),
        (True, "", "not an address", None, 403, "permission_denied"),
    ],
)
def test_other_callers_are_refused_in_the_error_shape(
    client, settings, allow_loopback, token, remote, authorization, status, code
):
    settings.METRICS_ALLOW_LOOPBACK, settings.METRICS_TOKEN = allow_loopback, token
    headers = {"REMOTE_ADDR": remote}
    if authorization is not None:
        headers["HTTP_AUTHORIZATION"] = authorization
    response = client.get("/metrics", **headers)
    assert_error(response, status, code)
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


@pytest.mark.parametrize("remote", ["10.1.2.3", "::1", "127.0.0.1"])
def test_the_token_opens_metrics_from_anywhere(client, settings, remote):
    settings.METRICS_ALLOW_LOOPBACK, settings.METRICS_TOKEN = False, TOKEN
    response = client.get("/metrics", REMOTE_ADDR=remote, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert b"cxrq_database_up 1.0" in response.content


def test_ipv6_and_mapped_loopback_count_as_local(client):
    for remote in ("::1", "::ffff:127.0.0.1"):
        assert client.get("/metrics", REMOTE_ADDR=remote).status_code == 200


def test_only_get_and_head(client):
    assert client.head("/metrics").status_code == 200
    for method in ("post", "put", "delete"):
        assert_error(getattr(client, method)("/metrics"), 405, "method_not_allowed")


def test_openmetrics_when_the_scraper_asks_for_it(client):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_queue_depth_by_priority_and_client_with_the_rest_as_other(client, settings, parse_metrics):
    make_jobs(3)
    other, _ = client_and_key(name="hospital-b")
    make_jobs(2, start=10, client=other)
    stat_client, _ = client_and_key(name="hospital-c")
    from django.core.files.uploadedfile import SimpleUploadedFile

    from backend.jobs.services import intake

    intake.job_create(
        client=stat_client, upload=SimpleUploadedFile("s.png", png_bytes(seed=99)), priority="stat"
    )

    samples = parse_metrics(client.get("/metrics").content.decode())
    depth = {k[1]: v for k, v in samples.items() if k[0] == "cxrq_queue_depth"}
    assert depth == {
        _labels(priority="routine", client="hospital-a"): 3,
        _labels(priority="routine", client="hospital-b"): 2,
        _labels(priority="stat", client="hospital-c"): 1,
    }
    assert samples[("cxrq_jobs", _labels(status="queued"))] == 6
    assert samples[("cxrq_queue_oldest_age_seconds", _labels(priority="routine"))] >= 0
    assert samples[("cxrq_queue_oldest_age_seconds", _labels(priority="stat"))] >= 0

    settings.METRICS_MAX_CLIENTS = 1  # the one with most queued keeps its name
    samples = parse_metrics(client.get("/metrics").content.decode())
    depth = {k[1]: v for k, v in samples.items() if k[0] == "cxrq_queue_depth"}
    assert depth == {
        _labels(priority="routine", client="hospital-a"): 3,
        _labels(priority="routine", client="other"): 2,
        _labels(priority="stat", client="other"): 1,
    }


def test_uploads_are_counted_new_or_deduplicated(api, client, parse_metrics):
    def counts() -> tuple[float, float]:
        samples = parse_metrics(client.get("/metrics").content.decode())
        return tuple(
            samples.get(("cxrq_uploads_total", _labels(outcome=o)), 0.0) for o in ("new", "deduplicated")
        )

    new, dedup = counts()
    assert post_image(api, png_bytes(seed=1)).status_code == 202
    assert post_image(api, png_bytes(seed=2)).status_code == 202
    assert post_image(api, png_bytes(seed=1)).status_code == 202  # the same bytes: the live job
    assert counts() == (new + 2, dedup + 1)


def test_requests_are_counted_by_django_prometheus(client, parse_metrics):
    def gets() -> float:
        samples = parse_metrics(client.get("/metrics").content.decode())
        return samples.get(("django_http_requests_total_by_method_total", _labels(method="GET")), 0.0)

    before = gets()
    client.get("/api/v1/health")
    assert gets() >= before + 2  # the health check and the scrape before this one


def test_heartbeats_give_each_workers_age_and_the_live_count(client, worker, parse_metrics):
    worker.start()
    samples = parse_metrics(client.get("/metrics").content.decode())
    ages = {
        dict(k[1])["worker_id"]: v for k, v in samples.items() if k[0] == "cxrq_worker_heartbeat_age_seconds"
    }
    assert list(ages) == [worker.worker_id]
    assert 0 <= ages[worker.worker_id] < 5
    assert samples[("cxrq_workers_live", frozenset())] == 1


def test_a_database_that_does_not_answer_is_a_gauge_not_an_error_page(client, monkeypatch, parse_metrics):
    def down(self):
        raise OperationalError("connection refused")

    monkeypatch.setattr(DatabaseCollector, "_queue", down)
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = parse_metrics(response.content.decode())
    assert samples[("cxrq_database_up", frozenset())] == 0
    assert not any(name == "cxrq_jobs" for name, _ in samples)


@pytest.mark.parametrize(
    ("code", "error", "outcome"),
    [
        (200, "", "2xx"),
        (204, "", "2xx"),
        (302, "http_302", "3xx"),
        (500, "http_500", "5xx"),
        (None, "timeout", "timeout"),
        (None, "connect_error: [Errno 111] Connection refused", "connect_error"),
        (None, "dns_error: Name or service not known", "dns_error"),
        (None, "refused: host not allowed", "refused"),
        (None, "RemoteProtocolError: peer closed", "other_error"),
        (None, "", "other_error"),
        (999, "", "other_error"),
    ],
)
def test_webhook_attempt_outcomes_are_a_bounded_set(code, error, outcome):
    assert attempt_outcome(code, error) == outcome


def test_a_made_up_method_or_content_length_is_neither_a_label_nor_a_500(client, parse_metrics):
    assert client.generic("FROBNICATE", "/api/v1/health").status_code < 500
    response = client.get("/api/v1/health", CONTENT_LENGTH="abc")
    assert response.status_code < 500
    methods = {
        dict(labels).get("method")
        for (name, labels) in parse_metrics(client.get("/metrics").content.decode())
        if name.startswith("django_http")
    }
    assert "FROBNICATE" not in methods and "<invalid method>" in methods
