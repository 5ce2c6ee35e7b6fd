"""Webhook deliveries against a real HTTP receiver on 127.0.0.1: what is sent and how it is
signed, the retries, the timeout, the give-up, redirects, and targets that are refused.

Attempts are run here with services.attempt (what the dispatcher's task runs); tests/webhooks/
test_dispatcher.py runs the whole path through a real worker and a real dispatcher.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from standardwebhooks import Webhook

from backend.jobs.models import Job
from backend.webhooks import services, signing
from backend.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from tests.factories import assert_error, client_and_key, png_bytes, post_image

pytestmark = pytest.mark.django_db(transaction=True)


def _job_ended_with_callback(api, url: str, seed: int = 1) -> Job:
    """Upload with a callback_url, then end the job (a cancel: a real move to an end)."""
    response = post_image(api, png_bytes(seed=seed), fields={"callback_url": url})
    assert response.status_code == 202, response.content
    assert response.json()["callback_url"] == url
    assert api.post(f"/api/v1/jobs/{response.json()['id']}/cancel").status_code == 200
    return Job.objects.get(id=response.json()["id"])


def _delivery(job: Job) -> WebhookDelivery:
    (delivery,) = WebhookDelivery.objects.filter(job=job)
    return delivery


def _attempt_now(delivery: WebhookDelivery) -> str | None:
    """Make the delivery due now (the backoff is the dispatcher's business) and attempt it."""
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=delivery.created_at)
    return services.attempt(str(delivery.id))


def test_the_job_is_posted_signed_as_standard_webhooks_say(api, receiver, settings):
    # The job's url in a webhook is built on PUBLIC_URL (there is no request to build it on).
    settings.PUBLIC_URL = "http://testserver"
    job = _job_ended_with_callback(api, receiver.url)
    delivery = _delivery(job)
    assert delivery.event == "job.cancelled" and delivery.status == DeliveryStatus.PENDING

    assert services.attempt(str(delivery.id)) == DeliveryStatus.DELIVERED
    (request,) = receiver.received
    assert request.path == "/hooks/cxrq"
    assert request.headers["webhook-id"] == str(delivery.id)
    assert request.headers["content-type"] == "application/json"
    secret = job.client.webhook_secret
    assert secret.startswith("whsec_")
    # The recipe of docs/api.md, and Standard Webhooks' own library, both accept it.
    assert signing.verify(secret, request.headers, request.body)
    Webhook(secret).verify(request.body, request.headers)
    # ... and a body or a secret that is not the one signed is refused.
    assert not signing.verify(secret, request.headers, request.body + b" ")
    other_secret = client_and_key(name="hospital-b")[0].webhook_secret
    assert not signing.verify(other_secret, request.headers, request.body)
    assert not signing.verify(secret, request.headers, request.body, now=time.time() + 600)

    # The body is the job as GET shows it (less the delivery log, queue place and the reference,
    # which is sealed at rest while the payload waits for its retries).
    shown = api.get(f"/api/v1/jobs/{job.id}").json()
    sent = json.loads(request.body)
    assert sent == {k: v for k, v in shown.items() if k not in ("webhooks", "pacs", "queue", "reference")}
    assert sent["status"] == "cancelled"
    # The attempt is recorded, and shown in the job.
    (logged,) = shown["webhooks"]
    assert logged["id"] == str(delivery.id) and logged["status"] == "delivered"
    assert [(a["number"], a["response_code"], a["error"]) for a in logged["attempts"]] == [(1, 200, "")]
    assert logged["attempts"][0]["duration_ms"] > 0


def test_a_500_is_retried_with_growing_backoff_and_the_same_bytes_until_it_is_taken(api, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    receiver.script = [500, 503]
    delivery = _delivery(_job_ended_with_callback(api, receiver.url))

    before = time.time()
    assert services.attempt(str(delivery.id)) == DeliveryStatus.PENDING
    delivery.refresh_from_db()
    first_delay = delivery.next_attempt_at.timestamp() - before
    assert 8.5 < first_delay < 11.5, first_delay
    # Not due yet: a second message for it (a duplicate) does nothing.
    assert services.attempt(str(delivery.id)) is None
    assert len(receiver.received) == 1

    before = time.time()
    assert _attempt_now(delivery) == DeliveryStatus.PENDING
    delivery.refresh_from_db()
    assert 17 < delivery.next_attempt_at.timestamp() - before < 23  # doubled
    assert _attempt_now(delivery) == DeliveryStatus.DELIVERED

    attempts = WebhookAttempt.objects.filter(delivery=delivery).order_by("number")
    assert [(a.number, a.response_code, a.error) for a in attempts] == [
        (1, 500, "http_500"),
        (2, 503, "http_503"),
        (3, 200, ""),
    ]
    bodies = {r.body for r in receiver.received}
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(bodies) == 1 and ids == {str(delivery.id)}  # a receiver can dedup on webhook-id
    # Each attempt signs its own timestamp.
    assert all(
        signing.verify(delivery.job.client.webhook_secret, r.headers, r.body) for r in receiver.received
    )


def test_a_receiver_that_does_not_answer_in_time_is_a_timeout(api, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.script = [("sleep", 2.0)]
    delivery = _delivery(_job_ended_with_callback(api, receiver.url))
    started = time.monotonic()
    assert services.attempt(str(delivery.id)) == DeliveryStatus.PENDING
    assert time.monotonic() - started < 1.8
    (attempt,) = WebhookAttempt.objects.filter(delivery=delivery)
    assert attempt.error == "timeout" and attempt.response_code is None
    assert 400 < attempt.duration_ms < 1500


def test_a_delivery_gives_up_once_its_time_has_run_out(api, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 1
    settings.WEBHOOK_GIVE_UP_SECONDS = 2.5
    receiver.script = [500] * 10
    delivery = _delivery(_job_ended_with_callback(api, receiver.url))
    assert services.attempt(str(delivery.id)) == DeliveryStatus.PENDING  # next in ~1 s: within 2.5
    assert _attempt_now(delivery) == DeliveryStatus.PENDING  # next in ~2 s: still within
    time.sleep(1.0)
    assert _attempt_now(delivery) == DeliveryStatus.GAVE_UP  # next in ~4 s: past the give-up
    delivery.refresh_from_db()
    assert delivery.finished_at is not None and delivery.next_attempt_at is None
    assert delivery.attempts == 3 == len(receiver.received)
    assert _attempt_now(delivery) is None  # over: nothing more is sent
    assert len(receiver.received) == 3


def test_redirects_are_not_followed(api, receiver, second_receiver):
    receiver.script = [("redirect", second_receiver.url)]
    delivery = _delivery(_job_ended_with_callback(api, receiver.url))
    assert services.attempt(str(delivery.id)) == DeliveryStatus.PENDING
    (attempt,) = WebhookAttempt.objects.filter(delivery=delivery)
    assert (attempt.response_code, attempt.error) == (302, "http_302")
    assert second_receiver.received == []


def test_a_callback_url_off_the_allow_list_is_refused_at_upload_and_nothing_is_stored(
    api, settings, media_files
):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    cases = {
        "http://127.0.0.1:9/hook": "callback_url_not_allowed",
        "http://hooks.elsewhere.example/x": "callback_url_not_allowed",
        "http://169.254.169.254/latest/meta-data/": "callback_url_not_allowed",
        "ftp://hooks.hospital.example/x": "invalid_callback_url",
        "http://user:pw@hooks.hospital.example/x": "invalid_callback_url",
        "/relative/path": "invalid_callback_url",
        "http://hooks.hospital.example:99999/x": "invalid_callback_url",
        "http://hooks.hospital.example/" + "a" * 2100: "invalid_callback_url",
    }
    for seed, (url, code) in enumerate(cases.items()):
        error = assert_error(post_image(api, png_bytes(seed=seed), fields={"callback_url": url}), 400, code)
        assert "host" in error["details"] or code == "invalid_callback_url"
    assert Job.objects.count() == 0 and media_files() == []


def test_the_allow_list_admits_names_subdomains_and_networks(api, settings):
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    client = client_and_key()[0]
    client.webhook_allowed_hosts = "hooks.hospital.example\n*.ris.hospital.example:8443\n10.20.0.0/16"
    client.save()
    for seed, url in enumerate(
        [
            "https://hooks.hospital.example/cxrq",
            "https://a.ris.hospital.example:8443/in?x=1",
            "http://10.20.3.4/hook",
        ]
    ):
        assert post_image(api, png_bytes(seed=seed), fields={"callback_url": url}).status_code == 202
    for seed, url in enumerate(["https://ris.hospital.example.evil.example/", "http://10.21.0.1/"], start=10):
        assert_error(
            post_image(api, png_bytes(seed=seed), fields={"callback_url": url}),
            400,
            "callback_url_not_allowed",
        )


def test_https_is_required_where_configured(api, settings):
    settings.WEBHOOK_REQUIRE_HTTPS = True
    assert_error(
        post_image(api, png_bytes(), fields={"callback_url": "http://127.0.0.1:9/hook"}),
        400,
        "callback_url_https_required",
    )


def test_an_allowed_name_that_resolves_to_a_private_address_is_refused_unless_its_network_is_listed(
    api, settings, receiver, monkeypatch
):
    """DNS rebinding: the name passed at upload; at delivery it points inside the network."""
    settings.WEBHOOK_ALLOW_LOOPBACK = False
    client = client_and_key()[0]
    port = receiver.server.server_address[1]
    client.webhook_allowed_hosts = f"hooks.hospital.example:{port}"
    client.save()
    url = f"http://hooks.hospital.example:{port}/hooks/cxrq"
    answers = {"hooks.hospital.example": "127.0.0.1"}

    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    delivery = _delivery(_job_ended_with_callback(api, url))
    assert services.attempt(str(delivery.id)) == DeliveryStatus.REFUSED
    (attempt,) = WebhookAttempt.objects.filter(delivery=delivery)
    assert attempt.error.startswith("refused: hooks.hospital.example resolves to 127.0.0.1")
    assert receiver.received == []

    # With the address listed, the same name is called: on the address checked, with its Host.
    client.webhook_allowed_hosts += "\n127.0.0.1/32"
    client.save()
    delivery = _delivery(_job_ended_with_callback(api, url, seed=2))
    assert services.attempt(str(delivery.id)) == DeliveryStatus.DELIVERED
    assert receiver.received[0].headers["host"] == f"hooks.hospital.example:{port}"


def test_an_ended_job_sent_again_with_a_callback_is_told_at_once(api, receiver, worker):
    first = post_image(api, png_bytes(seed=77))
    worker.drain()
    assert api.get(first.json()["url"]).json()["status"] == "succeeded"
    assert not WebhookDelivery.objects.exists()

    again = post_image(api, png_bytes(seed=77), fields={"callback_url": receiver.url})
    assert again.status_code == 200 and again.json()["deduplicated"] is True
    assert again.json()["callback_url"] == receiver.url
    (delivery,) = WebhookDelivery.objects.filter(job_id=first.json()["id"])
    assert delivery.event == "job.succeeded"
    assert services.attempt(str(delivery.id)) == DeliveryStatus.DELIVERED
    assert json.loads(receiver.received[0].body)["result"]["probabilities"]
