"""The ASGI edge on its own: bodies bounded and handed on whole, the application's time bounded."""

from __future__ import annotations

import asyncio
import json

import pytest

from backend.edge.asgi import EdgeMiddleware


def _call(app, *, headers=(), messages=(), method: str = "POST"):
    """Run the edge around `app` with these request messages; return what it sent."""
    sent, queue = [], list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/api/v1/jobs", "headers": list(headers)}
    asyncio.run(EdgeMiddleware(app)(scope, receive, send))
    return sent


def _error(sent) -> tuple[int, str]:
    return sent[0]["status"], json.loads(sent[1]["body"])["error"]["code"]


def test_a_body_is_handed_on_whole_in_bounded_pieces_with_its_length(settings):
    settings.UPLOAD_MAX_BYTES = 1 << 20
    body = bytes(range(256)) * 1024  # 256 KiB, sent in 3 pieces
    seen = {}

    async def app(scope, receive, send):
        data = b""
        while True:
            message = await receive()
            assert len(message["body"]) <= 64 * 1024
            data += message["body"]
            if not message["more_body"]:
                break
        seen["data"], seen["headers"] = data, dict(scope["headers"])
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    pieces = [body[:1000], body[1000:200_000], body[200_000:]]
    messages = [{"type": "http.request", "body": p, "more_body": i < 2} for i, p in enumerate(pieces)]
    sent = _call(app, headers=[(b"transfer-encoding", b"chunked")], messages=messages)
    assert sent[0]["status"] == 202
    assert seen["data"] == body
    assert seen["headers"][b"content-length"] == str(len(body)).encode()
    assert b"transfer-encoding" not in seen["headers"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ([(b"content-length", b"abc")], 400, "invalid_content_length"),
        ([(b"content-length", b"10"), (b"content-length", b"11")], 400, "invalid_content_length"),
        ([(b"content-length", b"999999999999")], 413, "file_too_large"),
    ],
)
def test_bad_or_huge_lengths_are_refused_before_the_application_runs(headers, status, code):
    async def app(scope, receive, send):
        raise AssertionError("the application must not run")

    assert _error(_call(app, headers=headers)) == (status, code)


def test_a_body_that_stops_coming_is_408(settings):
    settings.EDGE_BODY_TIMEOUT_SECONDS = 0.2

    async def app(scope, receive, send):
        raise AssertionError("the application must not run")

    messages = [{"type": "http.request", "body": b"x" * 10, "more_body": True}]
    sent = _call(app, headers=[(b"content-length", b"1000")], messages=messages)
    assert _error(sent) == (408, "request_timeout")
    assert (b"connection", b"close") in sent[0]["headers"]


def test_an_application_that_takes_too_long_is_answered_503(settings):
    settings.EDGE_REQUEST_TIMEOUT_SECONDS = 0.2

    async def app(scope, receive, send):
        await asyncio.sleep(5)

    assert _error(_call(app, method="GET")) == (503, "request_took_too_long")
