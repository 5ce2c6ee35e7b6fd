"""The receiver as a real process (`manage.py run_dicom`) on a free port, on the test's database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.clients.models import Client
from backend.dicomnet import services
from backend.dicomnet.models import DicomSender
from tests.dicomnet.factories import free_port, require_dcmtk
from tests.factories import ROOT, client_and_key, process_env


class ScpProcess:
    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_dicom", "--address", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=process_env({"CXRQ_LOG_FORMAT": "text", **(extra_env or {})}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> ScpProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "event=dicom_listening" in self.log:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"run_dicom exited with {self.proc.returncode}:\n{self.log[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"run_dicom not listening after {timeout}s:\n{self.log[-4000:]}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_scp(tmp_path) -> Iterator[Callable[..., ScpProcess]]:
    require_dcmtk()
    started: list[ScpProcess] = []

    def start(**extra_env: str) -> ScpProcess:
        scp = ScpProcess(tmp_path / f"scp-{len(started)}.log", {k: str(v) for k, v in extra_env.items()})
        started.append(scp)
        return scp.wait_ready()

    yield start
    for scp in started:
        scp.stop()


@pytest.fixture
def hospital(db) -> Client:
    return client_and_key("hospital-dicom")[0]


@pytest.fixture
def sender(hospital) -> DicomSender:
    """MODALITY sends as the hospital client, STAT."""
    return services.sender_add(ae_title="MODALITY", client=hospital, priority="stat")
