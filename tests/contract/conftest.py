"""The real web server (backend/edge/server.py, the command line of `make run` and production) on
the test database, for the contract tests: schemathesis over HTTP and the docs pages in Chromium."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from backend.edge.server import server_argv
from tests.factories import ROOT, client_and_key, process_env

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
def contract_server(tmp_path) -> Iterator[LiveServer]:
    """gunicorn + uvicorn workers on a free loopback port, with a submit key of a client of its own."""
    _, key = client_and_key(name="contract")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server_argv(f"127.0.0.1:{port}", workers=1),
            cwd=ROOT,
            env=process_env(SERVER_ENV),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", proc=proc, log=log, key=key)
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{server.url}/api/v1/health", timeout=2)
            break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    yield server
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
