"""Upload and read rates (429 + Retry-After), per client, whatever its key or address."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from backend.edge.server import server_argv
from tests.factories import (
    ROOT,
    assert_error,
    authorization,
    client_and_key,
    default_client,
    png_bytes,
    post_image,
    process_env,
)

pytestmark = pytest.mark.django_db


def test_upload_rate_is_per_client_whatever_key_or_address_with_retry_after(api, anonymous_api, settings):
    settings.UPLOAD_RATE = "3/min"
    for seed in range(3):
        assert post_image(api, png_bytes(seed=seed)).status_code == 202
    response = post_image(api, png_bytes(seed=9))
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert api.get("/api/v1/jobs").status_code == 200  # reads are counted apart
    # Another address, or another key of the same client: the same count.
    assert post_image(api, png_bytes(seed=10), REMOTE_ADDR="10.0.0.7").status_code == 429
    _, second_key = client_and_key()
    assert (
        post_image(anonymous_api, png_bytes(seed=11), HTTP_AUTHORIZATION=f"Api-Key {second_key}").status_code
        == 429
    )
    # Another client: its own count.
    _, other = client_and_key(name="hospital-b")
    assert (
        post_image(anonymous_api, png_bytes(seed=12), HTTP_AUTHORIZATION=f"Api-Key {other}").status_code
        == 202
    )


def test_reads_have_their_own_rate_apart_from_uploads(api, settings):
    settings.UPLOAD_RATE, settings.READ_RATE = "2/min", "3/min"
    job = post_image(api, png_bytes(seed=1)).json()
    for _ in range(3):
        assert api.get(f"/api/v1/jobs/{job['id']}").status_code == 200
    refused = api.get("/api/v1/jobs")  # the list and a job's page share the read count
    assert_error(refused, 429, "rate_limited")
    assert int(refused["Retry-After"]) >= 1
    assert post_image(api, png_bytes(seed=2)).status_code == 202  # uploads still have room


def test_a_clients_own_rates_override_the_defaults(api, anonymous_api, settings):
    settings.UPLOAD_RATE, settings.READ_RATE = "100/min", "1/min"
    client = default_client()
    client.upload_rate, client.read_rate = "1/min", "0"  # 0: no limit for this client
    client.save()
    assert post_image(api, png_bytes(seed=1)).status_code == 202
    assert_error(post_image(api, png_bytes(seed=2)), 429, "rate_limited")
    assert all(api.get("/api/v1/jobs").status_code == 200 for _ in range(5))
    # Another client keeps the defaults.
    _, other = client_and_key(name="hospital-b")
    headers = {"HTTP_AUTHORIZATION": f"Api-Key {other}"}
    assert anonymous_api.get("/api/v1/jobs", **headers).status_code == 200
    assert_error(anonymous_api.get("/api/v1/jobs", **headers), 429, "rate_limited")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["redis", "database"])
def test_two_web_processes_share_one_count(store, tmp_path):
    """Two gunicorn servers, requests alternating between them: exactly the rate gets through."""
    if store == "redis" and not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("Redis is not reachable in this run (start redis-server on 127.0.0.1:6379)")
    _, key = client_and_key(name=f"two-processes-{store}")
    env = process_env(
        {
            "CXRQ_READ_RATE": "30/min",
            "CXRQ_RATE_LIMIT_URL": settings.CELERY_BROKER_URL if store == "redis" else "",
        }
    )
    servers = [_gunicorn(env, tmp_path / f"web-{i}.log") for i in range(2)]
    try:
        codes = [
            requests.get(
                f"{servers[i % 2][0]}/api/v1/jobs", headers=authorization(key), timeout=10
            ).status_code
            for i in range(40)
        ]
    finally:
        for _, proc in servers:
            proc.terminate()
            proc.wait(10)
    assert codes == [200] * 30 + [429] * 10, codes


def _gunicorn(env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = server_argv(f"127.0.0.1:{port}", workers=1)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            return f"http://127.0.0.1:{port}", proc
        except (requests.ConnectionError, requests.Timeout):  # accepted before gunicorn's worker booted
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
    raise TimeoutError(log.read_text())
