"""The worker's metrics endpoint and the multiprocess folder, with real processes writing to it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from backend.metrics.exporter import MetricsServer
from tests.factories import ROOT, assert_error, process_env

TOKEN = "s" * 40


def _run(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


# Two processes count into one folder, as two pool children do.
_CHILD = (
    "import django; django.setup(); from worker import metrics; "
    "metrics.BATCH_SIZE.observe({size}); metrics.jobs_retried({retried}); "
    "metrics.PHASE_SECONDS.labels('infer').observe(0.02)"
)


@pytest.fixture
def server(tmp_path) -> Iterator[MetricsServer]:
    server = MetricsServer(path=tmp_path, address="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


def test_the_endpoint_sums_every_process_of_the_folder(server, tmp_path, parse_metrics):
    for size, retried in ((3, 1), (5, 2)):
        _run(_CHILD.format(size=size, retried=retried), {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    assert response.status_code == 200
    samples = parse_metrics(response.text)
    assert samples[("cxrq_worker_batch_size_count", frozenset())] == 2
    assert samples[("cxrq_worker_batch_size_sum", frozenset())] == 8
    assert samples[("cxrq_worker_jobs_total", frozenset({("outcome", "retried")}))] == 3
    assert samples[("cxrq_worker_phase_seconds_count", frozenset({("phase", "infer")}))] == 2


def test_the_endpoint_answers_metrics_only_and_to_allowed_callers(server, settings):
    base = f"http://127.0.0.1:{server.port}"
    assert_error(requests.get(f"{base}/other", timeout=5), 404, "not_found")
    assert_error(requests.post(f"{base}/metrics", timeout=5), 405, "method_not_allowed")
    assert requests.head(f"{base}/metrics", timeout=5).status_code == 200
    settings.METRICS_ALLOW_LOOPBACK, settings.METRICS_TOKEN = False, TOKEN
    assert_error(requests.get(f"{base}/metrics", timeout=5), 401, "not_authenticated")
    wrong = {"Authorization": "Bearer nope"}
    assert_error(requests.get(f"{base}/metrics", headers=wrong, timeout=5), 401, "authentication_failed")
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{base}/metrics", headers=right, timeout=5).status_code == 200


def test_a_port_in_use_is_an_oserror_for_the_caller_to_log(server, tmp_path):
    with pytest.raises(OSError):
        MetricsServer(path=tmp_path, address="127.0.0.1", port=server.port).start()


def test_a_private_folder_is_made_before_prometheus_client_and_removed_at_exit(tmp_path):
    out = _run(
        "import django; django.setup(); from backend.metrics import multiprocess; "
        "path = multiprocess.start_private_directory('worker'); "
        "import prometheus_client.values as v; "
        "print(path, path.is_dir(), v.ValueClass._multiprocess, multiprocess.directory() == path)",
        {"CXRQ_METRICS_DIR": str(tmp_path)},
    )
    path, is_dir, multiprocess_mode, current = out.split()
    assert Path(path).parent == tmp_path and Path(path).name.startswith("cxrq-worker-metrics-")
    assert (is_dir, multiprocess_mode, current) == ("True", "True", "True")
    assert not Path(path).exists()  # removed when its owner exited


def test_too_late_to_switch_once_prometheus_client_is_imported(tmp_path):
    out = _run(
        "import django; django.setup(); import prometheus_client; "
        "from backend.metrics import multiprocess; print(multiprocess.start_private_directory('worker'))",
        {"CXRQ_METRICS_DIR": str(tmp_path)},
    )
    assert out.split()[-1] == "None"
    assert list(tmp_path.iterdir()) == []


def test_outside_gunicorn_the_web_keeps_one_process_registry():
    from backend.metrics import multiprocess

    assert multiprocess.prepare_web_server() is None
    assert multiprocess.directory() is None
