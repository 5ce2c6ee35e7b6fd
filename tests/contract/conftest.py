"""The real web server (backend/edge/server.py, the command line of `make run` and production) on
the test database, for the contract tests: schemathesis over HTTP and the docs pages in Chromium."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import client_and_key

# No rate or per-client queue cap (a refusal would hide the success paths); waits bounded to 2 s so a
# generated `wait` cannot hold the run.
SERVER_ENV = {
    "DJANGO_DEBUG": "false",
    "CXRQ_UPLOAD_RATE": "0",
    "CXRQ_READ_RATE": "0",
    "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
    "CXRQ_LONG_POLL_MAX_SECONDS": "2",
}


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen
    log: Path
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Api-Key {self.key}"}


@pytest.fixture
def contract_server(start_web) -> LiveServer:
    """gunicorn + uvicorn workers on a free loopback port (tests/conftest.py), with a submit key of a
    client of its own."""
    _, key = client_and_key(name="contract")
    web = start_web(SERVER_ENV)
    web.wait_ready()
    return LiveServer(url=web.url, proc=web.proc, log=web.log_path, key=key)
