"""The broker production accepts (Redis or RabbitMQ, never the embedded ones), and what RabbitMQ gets:
quorum queues on topic exchanges, bounded sockets, publisher confirms. Settings are read in a fresh
process, as a deployment reads them."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import ROOT

READ = (
    "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({k: "
    "getattr(s, k, None) for k in ('CELERY_BROKER_URL', 'CELERY_TASK_DEFAULT_QUEUE_TYPE', "
    "'CELERY_TASK_CREATE_MISSING_QUEUE_TYPE', 'CELERY_TASK_DEFAULT_EXCHANGE_TYPE', "
    "'CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE', 'CELERY_BROKER_TRANSPORT_OPTIONS', "
    "'CELERY_BROKER_HEARTBEAT', 'RATE_LIMIT_URL', 'JOB_EVENTS_URL')}))"
)


def read_settings(tmp_path: Path, broker_url: str, **extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "DJANGO_SETTINGS_MODULE": "backend.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "cxrq.example.org",
        "CXRQ_PUBLIC_URL": "https://cxrq.example.org",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "CELERY_BROKER_URL": broker_url,
        "CXRQ_MODEL_WEIGHTS_SHA256": "a" * 64,
        "CXRQ_PHI_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "CXRQ_VAR_DIR": str(tmp_path / "var"),
        **extra,
    }
    return subprocess.run(
        [sys.executable, "-c", READ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("scheme", ["amqp", "amqps"])
def test_production_accepts_rabbitmq_with_quorum_queues_and_bounded_sockets(tmp_path, scheme):
    out = read_settings(tmp_path, f"{scheme}://cxrq:secret@rabbitmq.internal:5672/cxrq")
    assert out.returncode == 0, out.stderr[-3000:]
    conf = json.loads(out.stdout.strip().splitlines()[-1])
    assert conf["CELERY_TASK_DEFAULT_QUEUE_TYPE"] == conf["CELERY_TASK_CREATE_MISSING_QUEUE_TYPE"] == "quorum"
    assert conf["CELERY_TASK_DEFAULT_EXCHANGE_TYPE"] == "topic"  # native delayed delivery needs it
    assert conf["CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE"] == "topic"
    assert 0 < conf["CELERY_BROKER_HEARTBEAT"] <= 30  # a dead consumer link noticed in seconds
    options = conf["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert options["confirm_publish"] is True
    assert options["max_retries"] == 0
    assert 0 < options["connect_timeout"] <= 2
    assert 0 < options["read_timeout"] <= 5 and 0 < options["write_timeout"] <= 5
    # Redis is not the broker here: counters and job-ended events use the database unless pointed
    # at a Redis of their own.
    assert conf["RATE_LIMIT_URL"] == "" and conf["JOB_EVENTS_URL"] == ""


def test_rabbitmq_broker_with_redis_for_rate_limits_and_events(tmp_path):
    out = read_settings(
        tmp_path,
        "amqp://cxrq:secret@rabbitmq.internal:5672/cxrq",
        CXRQ_RATE_LIMIT_URL="redis://redis.internal:6379/1",
        CXRQ_JOB_EVENTS_URL="redis://redis.internal:6379/2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    conf = json.loads(out.stdout.strip().splitlines()[-1])
    assert conf["RATE_LIMIT_URL"] == "redis://redis.internal:6379/1"
    assert conf["JOB_EVENTS_URL"] == "redis://redis.internal:6379/2"


def test_production_still_accepts_redis_with_its_own_options(tmp_path):
    out = read_settings(tmp_path, "redis://redis.internal:6379/0")
    assert out.returncode == 0, out.stderr[-3000:]
    conf = json.loads(out.stdout.strip().splitlines()[-1])
    assert conf["CELERY_TASK_DEFAULT_QUEUE_TYPE"] is None  # Celery's classic default: not RabbitMQ
    assert conf["CELERY_BROKER_TRANSPORT_OPTIONS"]["socket_connect_timeout"] == 1
    assert conf["JOB_EVENTS_URL"] == "redis://redis.internal:6379/0"


@pytest.mark.parametrize("url", ["filesystem://", "memory://", "sqla+postgresql://db/cxrq"])
def test_production_refuses_single_host_and_unsupported_brokers(tmp_path, url):
    out = read_settings(tmp_path, url)
    assert out.returncode != 0
    assert "production needs CELERY_BROKER_URL pointing at Redis" in out.stderr
    assert "RabbitMQ" in out.stderr
