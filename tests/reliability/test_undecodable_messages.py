"""A message a worker cannot decode, put straight into the broker, is dropped with one WARNING line:
the worker keeps running and the next wake-up is served. kombu's virtual transports raised from the
consumer's loop instead, which Celery treats as an unrecoverable error: the worker stopped (and
`make run` with it). Both brokers a virtual transport serves: the embedded filesystem one and Redis.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from tests.factories import png_bytes
from tests.reliability.harness import embedded_default

pytestmark = pytest.mark.slow


def _envelope(queue: str, body: bytes) -> bytes:
    """An envelope as kombu writes one, around a body that is not a Celery message."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {},
            "properties": {
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": queue},
                "delivery_mode": 2,
                "delivery_tag": str(uuid.uuid4()),
                "priority": 0,
            },
        }
    ).encode()


def garbage(queue: str) -> list[bytes]:
    return [
        b"",  # what kombu's own filesystem transport left for a reader while it was still writing
        b"{not json",
        b"[1, 2]",
        b'{"properties": {}}',
        b'{"body": "%%% not base64", "properties": {"delivery_tag": "x", "body_encoding": "base64"}}',
        _envelope(queue, b"{not json either"),  # decoded by Celery: its decode error, not kombu's
    ]


def _put_filesystem(stack, messages: list[bytes]) -> None:
    folder = Path(stack.env["CXRQ_BROKER_DIR"]) / "queue"
    queue = stack.env["CXRQ_QUEUE"]
    for i, raw in enumerate(messages):
        # Sorted before any real wake-up: the worker meets them first.
        (folder / f"0{i}_{uuid.uuid4()}.{queue}.msg").write_bytes(raw)


def _put_redis(stack, messages: list[bytes]) -> None:
    import redis

    client = redis.Redis.from_url(stack.env["CELERY_BROKER_URL"])
    for raw in messages:
        client.lpush(stack.env["CXRQ_QUEUE"], raw)


@pytest.mark.parametrize("broker", ["filesystem", "redis"])
def test_a_message_nobody_can_decode_is_dropped_and_the_worker_serves_on(
    broker, make_stack, tmp_path, private_redis
):
    embedded = embedded_default(tmp_path)
    database_url, broker_url = embedded.pop("database_url"), embedded.pop("broker_url")
    if broker == "redis":
        broker_url = private_redis.url
    stack = make_stack(database_url, broker_url, **embedded)
    stack.start_web()
    worker = stack.start_worker()

    messages = garbage(stack.env["CXRQ_QUEUE"])
    (_put_filesystem if broker == "filesystem" else _put_redis)(stack, messages)
    response = stack.upload(png_bytes(seed=7))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    done = stack.wait_terminal([job_id], timeout=90)

    assert done[job_id]["status"] == "succeeded"
    assert worker.poll() is None  # still running
    log = stack.log_of(worker)
    assert "Unrecoverable error" not in log
    assert "level=CRITICAL" not in log
    dropped = [line for line in log.splitlines() if "event=broker_message_dropped" in line]
    assert len(dropped) == len(messages), dropped
    assert all("level=WARNING" in line for line in dropped)
