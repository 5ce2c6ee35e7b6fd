"""Log lines: key=value parsing, the JSON line format, the ids they carry, and one job followed
from the web's request to the worker's lines with real processes."""

from __future__ import annotations

import io
import json
import logging

import pytest
import requests

from backend.core.logging import JsonLineFormatter, RequestIdFilter, job_id_var, log_context, parse_fields
from tests.factories import authorization, png_bytes, poll_job


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("event=job_created job_id=abc size=3", {"event": "job_created", "job_id": "abc", "size": "3"}),
        (
            "event=inference_failed batch_id=b1 error=RuntimeError('bad input, shape (1, 2)') size=2",
            {
                "event": "inference_failed",
                "batch_id": "b1",
                "error": "RuntimeError('bad input, shape (1, 2)')",
                "size": "2",
            },
        ),
        (
            "event=release_failed batch_id=b2 (leases will lapse)",
            {"event": "release_failed", "batch_id": "b2"},
        ),
        (
            "event=x info={'backend': 'onnx', 'threads': 2} n=1",
            {"event": "x", "info": "{'backend': 'onnx', 'threads': 2}", "n": "1"},
        ),
        ('event=x error="a \\" b" then', {"event": "x", "error": '"a \\" b"'}),
        ("event=x a=1 a=2", {"event": "x", "a": "1"}),
        ("event=x job_ids=a,b,c empty=", {"event": "x", "job_ids": "a,b,c", "empty": ""}),
        ("AXES: BEGIN version 8.3.1, blocking by combination", {}),
        ("Task process_jobs[1f2e] received", {}),
        ("2x=1 x=2", {"x": "2"}),
        ("event=x error=ValueError('unclosed", {"event": "x", "error": "ValueError('unclosed"}),
    ],
)
def test_key_value_pairs_are_parsed_like_logfmt(message, fields):
    assert parse_fields(message) == fields


def _formatted(formatter: logging.Formatter, *args, exc_info=None, **kwargs) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("tests.core.logging")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(*args, exc_info=exc_info, **kwargs)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_a_json_line_has_the_fixed_fields_first_then_the_messages_pairs():
    with log_context(request_id="req-1", job_id="job-9"):
        line = _formatted(JsonLineFormatter(), "event=batch_done batch_id=%s size=%d", "b7", 8)
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert list(record)[:8] == ["ts", "level", "logger", "event", "request_id", "job_id", "message", "pid"]
    assert record["ts"].endswith("+00:00")
    assert record | {"ts": None, "pid": None} == {
        "ts": None,
        "level": "WARNING",
        "logger": "tests.core.logging",
        "event": "batch_done",
        "request_id": "req-1",
        "job_id": "job-9",
        "message": "event=batch_done batch_id=b7 size=8",
        "pid": None,
        "batch_id": "b7",
        "size": "8",
    }


def test_ids_are_null_outside_a_request_and_a_job_id_in_the_message_wins():
    record = json.loads(_formatted(JsonLineFormatter(), "event=job_created job_id=j1"))
    assert record["request_id"] is None and record["job_id"] == "j1"
    record = json.loads(_formatted(JsonLineFormatter(), "plain words, no pairs"))
    assert (record["event"], record["request_id"], record["job_id"]) == (None, None, None)


def test_fixed_fields_cannot_be_overwritten_by_the_message_or_extra():
    line = _formatted(
        JsonLineFormatter(), "event=x level=fake logger=fake ts=0", extra={"pid": "fake", "site": "a"}
    )
    record = json.loads(line)
    assert record["level"] == "WARNING" and record["logger"] == "tests.core.logging" and record["ts"] != "0"
    assert isinstance(record["pid"], int)
    assert record["site"] == "a"  # other extra= fields are kept


def test_exceptions_are_one_field_on_the_same_line():
    try:
        raise ValueError("broken\nacross lines")
    except ValueError as exc:
        line = _formatted(JsonLineFormatter(), "event=batch_error error=%r", exc, exc_info=True)
    assert line.count("\n") == 1
    record = json.loads(line)
    assert "ValueError: broken" in record["exc_info"] and record["event"] == "batch_error"


def test_log_context_sets_and_restores_the_ids():
    with log_context(request_id="r", job_id=123):
        assert job_id_var.get() == "123"
        with log_context(request_id=""):  # a job uploaded without a request id
            line = _formatted(logging.Formatter("%(request_id)s %(job_id)s"), "x")
            assert line == "- 123\n"
    assert job_id_var.get() == "-"


def test_the_text_format_keeps_key_value_lines_with_the_request_id(settings):
    fmt = settings.LOGGING["formatters"]["text"]["format"]
    with log_context(request_id="abc"):
        line = _formatted(logging.Formatter(fmt), "event=job_created job_id=%s", "j1")
    assert " request_id=abc event=job_created job_id=j1\n" in line and line.startswith("ts=")


# --- real processes ----------------------------------------------------------------


def _json_lines(log: str) -> list[dict]:
    """Every line that is a JSON object (gunicorn's and Celery's own banners are plain text)."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_web_and_the_worker_log_a_job_with_its_requests_id(start_web, start_worker, api_key):
    json_logs = {"CXRQ_LOG_FORMAT": "json"}
    web = start_web(json_logs)
    worker = start_worker(json_logs | {"CXRQ_MODEL_FAKE": "1"})
    web.wait_ready()
    worker.wait_ready()
    auth = authorization(api_key)
    response = requests.post(
        f"{web.url}/api/v1/jobs",
        files={"image": ("x.png", png_bytes(seed=7))},
        headers=auth | {"X-Request-ID": "trace-7f3a"},
        timeout=10,
    )
    assert response.status_code == 202 and response.headers["X-Request-ID"] == "trace-7f3a"
    job_id = response.json()["id"]
    assert poll_job(response.json()["url"], headers=auth)["status"] == "succeeded"
    # Another request without an id: the web makes one, and the worker's line for it has it too.
    other = requests.post(
        f"{web.url}/api/v1/jobs", files={"image": ("y.png", png_bytes(seed=8))}, headers=auth, timeout=10
    )
    assert poll_job(other.json()["url"], headers=auth)["status"] == "succeeded"
    web.stop()
    worker.stop()

    web_lines, worker_lines = _json_lines(web.log), _json_lines(worker.log)
    assert web_lines and worker_lines
    (created,) = [r for r in web_lines if r["event"] == "job_created" and r["job_id"] == job_id]
    (succeeded,) = [r for r in worker_lines if r["event"] == "job_succeeded" and r["job_id"] == job_id]
    assert created["request_id"] == succeeded["request_id"] == "trace-7f3a"
    assert succeeded["batch_id"] and succeeded["logger"] == "worker.batch_loop"

    other_id, made_up = other.json()["id"], other.headers["X-Request-ID"]
    (created,) = [r for r in web_lines if r["event"] == "job_created" and r["job_id"] == other_id]
    (succeeded,) = [r for r in worker_lines if r["event"] == "job_succeeded" and r["job_id"] == other_id]
    assert created["request_id"] == succeeded["request_id"] == made_up
    # The batch line names its jobs; it is about no single job, so it carries neither id.
    (batch,) = [r for r in worker_lines if r["event"] == "batch_done" and other_id in r["job_ids"]]
    assert batch["request_id"] is None and batch["job_id"] is None
