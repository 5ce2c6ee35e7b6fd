"""PACS peers for the delivery tests: dcmtk's storescp (a PACS that stores what it is sent), a
pynetdicom SCP scripted to refuse, and a port with nothing behind it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from backend.clients.models import Client
from backend.pacs import services
from backend.pacs.models import DicomDestination
from tests.dicomnet.factories import free_port
from tests.factories import ROOT, client_and_key, process_env


@pytest.fixture
def hospital(db) -> Client:
    return client_and_key("hospital-pacs")[0]


@pytest.fixture
def destination(hospital) -> Callable[..., DicomDestination]:
    def add(port: int, *, name: str = "pacs", ae_title: str = "PACS", **kwargs) -> DicomDestination:
        return services.destination_add(
            client=hospital, name=name, ae_title=ae_title, host="127.0.0.1", port=port, **kwargs
        )

    return add


class StoreScp:
    """dcmtk's storescp on a free port, writing what it receives to a folder."""

    def __init__(self, folder: Path, ae_title: str = "PACS"):
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder.parent / f"storescp-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["storescp", "-aet", ae_title, "-od", str(folder), "-uf", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    ["echoscu", "-aec", ae_title, "127.0.0.1", str(self.port)], capture_output=True
                ).returncode
                == 0
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"storescp not answering:\n{self.log_path.read_text(errors='replace')}")

    def received(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(p) for p in sorted(self.folder.iterdir()) if p.is_file()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def storescp(tmp_path) -> Iterator[StoreScp]:
    if not (shutil.which("storescp") and shutil.which("echoscu")):
        pytest.skip("dcmtk is not installed: apt-get install dcmtk")
    scp = StoreScp(tmp_path / "pacs")
    yield scp
    scp.stop()


@dataclass
class ScriptedScp:
    """A pynetdicom storage SCP in this process: answers each C-STORE with the next status of
    `statuses` (then success), and accepts only the calling AE titles in `calling` (all if empty)."""

    port: int
    statuses: list[int] = field(default_factory=list)
    stored: list[pydicom.Dataset] = field(default_factory=list)
    server: object = None

    def handle_store(self, event) -> int:
        status = self.statuses.pop(0) if self.statuses else 0x0000
        if status == 0x0000:
            self.stored.append(event.dataset)
        return status


@pytest.fixture
def scripted_scp() -> Iterator[Callable[..., ScriptedScp]]:
    servers = []

    def start(*, statuses: list[int] | None = None, calling: list[str] | None = None) -> ScriptedScp:
        scp = ScriptedScp(port=free_port(), statuses=list(statuses or []))
        ae = AE(ae_title="PACS")
        ae.add_supported_context(ComprehensiveSRStorage)
        ae.add_supported_context(SecondaryCaptureImageStorage)
        if calling:
            ae.require_calling_aet = calling
        scp.server = ae.start_server(
            ("127.0.0.1", scp.port), block=False, evt_handlers=[(evt.EVT_C_STORE, scp.handle_store)]
        )
        servers.append(scp.server)
        return scp

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (bound and released)."""
    return free_port()


class Orthanc:
    """Debian's Orthanc on free loopback ports with a generated configuration: its own storage,
    HTTP only from this machine and without authentication, and one DICOM peer, cxrq's receiver
    (the only AE allowed to store into it, and only from 127.0.0.1)."""

    AE_TITLE = "ORTHANC"

    def __init__(self, folder: Path, *, cxrq_ae_title: str, cxrq_port: int):
        import json

        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cxrq-test-pacs",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "Plugins": [],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomAet": self.AE_TITLE,
            "DicomPort": self.dicom_port,
            "DicomModalities": {"cxrq": [cxrq_ae_title, "127.0.0.1", cxrq_port]},
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomScuTimeout": 30,
            "DicomAssociationCloseDelay": 0,
            "SaveJobs": False,
            "StableAge": 1,
            "HttpProxy": "",
        }
        path = folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        self.log_path = folder / "orthanc.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> Orthanc:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/system", timeout=2, trust_env=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"Orthanc not ready after {timeout}s:\n{self.log[-4000:]}")

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
def start_orthanc(tmp_path) -> Iterator[Callable[..., Orthanc]]:
    if not (shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists()):
        pytest.skip("Orthanc is not installed: apt-get install orthanc")
    started: list[Orthanc] = []

    def start(*, cxrq_ae_title: str, cxrq_port: int) -> Orthanc:
        orthanc = Orthanc(
            tmp_path / f"orthanc-{len(started)}", cxrq_ae_title=cxrq_ae_title, cxrq_port=cxrq_port
        )
        started.append(orthanc)
        return orthanc.wait_ready()

    yield start
    for orthanc in started:
        orthanc.stop()


class DicomReceiver:
    """cxrq's receiver as a real process (`manage.py run_dicom`) on a free loopback port."""

    def __init__(self, log_path: Path):
        import sys

        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_dicom", "--address", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=process_env({"CXRQ_LOG_FORMAT": "text"}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> DicomReceiver:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "event=dicom_listening" in self.log:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"run_dicom exited with {self.proc.returncode}:\n{self.log[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"run_dicom not listening after {timeout}s:\n{self.log[-4000:]}")

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
def dicom_receiver(tmp_path) -> Iterator[DicomReceiver]:
    receiver = DicomReceiver(tmp_path / "run_dicom.log")
    yield receiver
    receiver.stop()
