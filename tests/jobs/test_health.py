"""GET /api/v1/health: degraded with a reason code for each problem, 503 when strict."""

from __future__ import annotations

import dataclasses

import pytest

from tests.factories import png_bytes, post_image

pytestmark = pytest.mark.django_db


def test_health_reports_degradations(operator_api, api, settings, worker):
    body = operator_api.get("/api/v1/health").json()
    assert "no_live_worker" in body["reasons"]
    assert body["status"] == "degraded"
    assert operator_api.get("/api/v1/health?strict=1").status_code == 503

    worker.start()  # reports in
    settings.MAX_QUEUE_DEPTH = 1
    post_image(api, png_bytes(seed=30))
    response = operator_api.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["reasons"] == ["queue_over_depth"]
    settings.MAX_QUEUE_DEPTH = 100
    ok = operator_api.get("/api/v1/health?strict=1")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok"
    assert ok.json()["workers"]["live"] == 1


def test_health_when_the_broker_is_down(operator_api, settings, worker, monkeypatch):
    from backend.celery_app import app

    worker.start()
    unreachable = app.connection_for_write  # a broker nobody listens on
    monkeypatch.setattr(app, "connection_for_write", lambda *a, **kw: unreachable("redis://127.0.0.1:1/0"))
    body = operator_api.get("/api/v1/health").json()
    assert body["broker"]["ok"] is False
    assert body["reasons"] == ["broker_unavailable"]


def test_health_says_when_no_live_worker_runs_the_model_version_uploads_queue_for(operator_api, fake_runtime):
    """Workers are live, but all of them run another model version: queued jobs would wait
    for ever, and health says so with its own reason."""
    from worker.lifecycle import WorkerProcess

    other = WorkerProcess(
        runtime=dataclasses.replace(fake_runtime, model_version="densenet121-res224-all@other")
    )
    try:
        other.start()
        body = operator_api.get("/api/v1/health").json()
        assert body["reasons"] == ["no_worker_for_model_version"]
        assert body["workers"]["live"] == 1 and body["workers"]["serving_model_version"] == 0
        assert operator_api.get("/api/v1/health?strict=1").status_code == 503
    finally:
        other.stop()


def test_anonymous_callers_get_the_status_and_reasons_only(anonymous_api, api, operator_api):
    """Worker ids (host:pid), database vendor, broker and model version are for operators."""
    for caller in (anonymous_api, api):  # no key, and a client's submit key
        response = caller.get("/api/v1/health")
        assert response.status_code == 200
        assert set(response.json()) == {"status", "reasons"}
        assert "no_live_worker" in response.json()["reasons"]
    assert {"database", "broker", "workers", "model_version"} <= set(
        operator_api.get("/api/v1/health").json()
    )


def _runstack_state(path, pid: int, **states: str) -> None:
    import json

    components = {
        name: {"state": s, "pid": None, "restarts": 1, "since": "", "last_exit": -9}
        for name, s in states.items()
    }
    path.write_text(json.dumps({"pid": pid, "updated_at": "", "components": components}))


def test_under_make_run_health_names_the_component_that_is_down(
    operator_api, anonymous_api, settings, worker, tmp_path
):
    """runstack writes its processes' states to a file (backend/jobs/management/commands/runstack.py);
    while it restarts one that died, health is degraded and says which."""
    import os

    worker.start()
    state = tmp_path / "runstack-8000.json"
    settings.RUNSTACK_STATE_FILE = str(state)
    _runstack_state(state, os.getpid(), web="up", worker="down", dispatcher="up")
    body = operator_api.get("/api/v1/health").json()
    assert body["reasons"] == ["worker_process_down"]
    assert body["stack"]["components"]["worker"] == "down"
    assert anonymous_api.get("/api/v1/health").json() == {
        "status": "degraded",
        "reasons": ["worker_process_down"],
    }

    _runstack_state(state, os.getpid(), web="up", worker="up", dispatcher="up")
    assert operator_api.get("/api/v1/health").json()["reasons"] == []


def test_a_runstack_state_without_its_runstack_is_not_believed(operator_api, settings, worker, tmp_path):
    worker.start()
    state = tmp_path / "runstack-8000.json"
    settings.RUNSTACK_STATE_FILE = str(state)
    _runstack_state(state, 2**22 + 12345, web="up", worker="up")  # no such process
    body = operator_api.get("/api/v1/health").json()
    assert body["stack"] == {"ok": False, "error": "runstack_state_unavailable"}
    settings.RUNSTACK_STATE_FILE = ""
    assert "stack" not in operator_api.get("/api/v1/health").json()
