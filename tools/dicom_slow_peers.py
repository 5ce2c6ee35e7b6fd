"""Hold the DICOM receiver's port with idle and trickling connections and time a registered
sender's C-STORE, for this checkout's receiver and (with --old-root) another one side by side.

    python tools/dicom_slow_peers.py [--old-root /tmp/cxrq-old] [--idle 50] [--trickle 12]

--old-root is a checkout of an earlier commit (`git worktree add /tmp/cxrq-old <commit>`): its
`manage.py run_dicom` is started on the same database, migrated by this checkout.

Figures, per receiver:
- a sender's association + C-STORE + release with the port to itself (median of --rounds);
- the same while --idle connections that send nothing and --trickle connections sending an
  A-ASSOCIATE-RQ one byte every --trickle-interval seconds are open, each from its own loopback
  address (127.0.0.2 and up): how many rounds were stored, refused, and how long each took;
- when the receiver closed the idle and the trickling connections, seconds after they connected
  (capped at --watch seconds: "open" if still open then).

The machine's CPU, core count and load average are printed with the figures: on a shared machine
compare the two receivers of one run, not figures of different runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.stack import ProcessStack, free_port, wait_for  # noqa: E402

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
CALLING, CALLED = "BENCHSCU", "CXRQ"


def associate_rq() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = CALLING
    primitive.called_ae_title = CALLED
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16382
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    primitive.user_information = [max_length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def chest(seed: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "BENCH", "BENCH^ONLY", "BENCH"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(seed).integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def store_once(port: int, seed: int) -> tuple[str, float]:
    """('stored' | 'rejected: …' | 'failed: …', seconds) for one association with one C-STORE."""
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(CR_STORAGE, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ds = chest(seed)
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    if not assoc.is_established:
        outcome = "rejected" if assoc.is_rejected else "no association"
        if assoc.is_rejected:
            outcome += (
                f": result {assoc.acceptor.primitive.result} reason {assoc.acceptor.primitive.diagnostic}"
            )
        return outcome, time.monotonic() - started
    status = assoc.send_c_store(ds)
    assoc.release()
    code = getattr(status, "Status", None)
    return ("stored" if code == 0 else f"failed: {code}"), time.monotonic() - started


class Attack:
    """Idle and trickling connections, each from its own loopback address, and when each closed."""

    def __init__(self, port: int, idle: int, trickle: int, interval: float) -> None:
        self.request = associate_rq()
        self.interval = interval
        self.opened_at = time.monotonic()
        self.idle = [self._connect(port, n) for n in range(idle)]
        self.trickling = [self._connect(port, idle + n) for n in range(trickle)]
        self.closed_after: dict[int, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._trickle, daemon=True)]
        self._threads += [
            threading.Thread(target=self._watch, args=(sock,), daemon=True)
            for sock in self.idle + self.trickling
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _connect(port: int, n: int) -> socket.socket:
        sock = socket.socket()
        sock.bind((f"127.0.{n // 250}.{n % 250 + 2}", 0))  # the nth peer address: 127.0.0.2 and up
        sock.connect(("127.0.0.1", port))
        return sock

    def _trickle(self) -> None:
        for byte in range(len(self.request)):
            for sock in self.trickling:
                with contextlib.suppress(OSError):  # closed by the receiver
                    sock.send(self.request[byte : byte + 1])
            if self._stop.wait(self.interval):
                return

    def _watch(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        with contextlib.suppress(OSError):
            sock.recv(1024)
        if not self._stop.is_set():
            self.closed_after[id(sock)] = time.monotonic() - self.opened_at

    def closed(self, socks: list[socket.socket]) -> list[float | None]:
        return [self.closed_after.get(id(sock)) for sock in socks]

    def stop(self) -> None:
        self._stop.set()
        for sock in self.idle + self.trickling:
            sock.close()


def summary(closed: list[float | None]) -> dict:
    times = [t for t in closed if t is not None]
    return {
        "closed": len(times),
        "still_open": len(closed) - len(times),
        "median_s": round(statistics.median(times), 2) if times else None,
        "max_s": round(max(times), 2) if times else None,
    }


def probe(stack: ProcessStack, root: Path, args) -> dict:
    port = free_port()
    proc = stack.spawn(
        "dicom",
        [sys.executable, str(root / "manage.py"), "run_dicom", "--address", "127.0.0.1", "--port", str(port)],
    )
    wait_for(
        lambda: "event=dicom_listening" in stack.log_of(proc) or proc.poll() is not None,
        120,
        what="run_dicom",
    )
    if proc.poll() is not None:
        raise RuntimeError(stack.log_of(proc)[-3000:])
    try:
        alone = [store_once(port, seed) for seed in range(args.rounds)]
        attack = Attack(port, args.idle, args.trickle, args.trickle_interval)
        try:
            under = []
            for seed in range(args.rounds):
                under.append(store_once(port, 1000 + seed))
            deadline = time.monotonic() + args.watch
            while time.monotonic() < deadline and len(attack.closed_after) < args.idle + args.trickle:
                time.sleep(0.2)
            idle, trickling = attack.closed(attack.idle), attack.closed(attack.trickling)
        finally:
            attack.stop()
    finally:
        stopping = time.monotonic()
        stack.signal(proc, signal.SIGTERM)
        try:
            proc.wait(30)
            stopped = f"{time.monotonic() - stopping:.1f} s"
        except subprocess.TimeoutExpired:
            stack.signal(proc, signal.SIGKILL)
            proc.wait(10)
            stopped = "still running after 30 s: killed"
    return {
        "store alone, median s": round(statistics.median(t for _, t in alone), 3),
        "store under attack": {
            "stored": sum(o == "stored" for o, _ in under),
            "of": len(under),
            "outcomes": sorted({o for o, _ in under}),
            "median_s": round(statistics.median(t for _, t in under), 3),
            "max_s": round(max(t for _, t in under), 3),
        },
        f"idle connections closed by the receiver (watched {args.watch:g} s)": summary(idle),
        f"trickling connections closed by the receiver (watched {args.watch:g} s)": summary(trickling),
        "SIGTERM to exit, once the peers had gone": stopped,
    }


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return f"CPU: {cpu}, {os.cpu_count()} cores; loadavg: {Path('/proc/loadavg').read_text().strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old-root", type=Path, help="another checkout's receiver to compare")
    parser.add_argument("--idle", type=int, default=50)
    parser.add_argument("--trickle", type=int, default=12)
    parser.add_argument("--trickle-interval", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--watch", type=float, default=40.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cxrq-dicom-peers-"))
    db = f"cxrq_dicom_peers_{uuid.uuid4().hex[:8]}"
    pg = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"create database {db}"], capture_output=True
    )
    database_url = (
        f"postgres://postgres@127.0.0.1:5432/{db}"
        if pg.returncode == 0
        else f"sqlite:///{workdir}/db.sqlite3"
    )
    stack = ProcessStack(
        workdir,
        {
            "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
            "DJANGO_DEBUG": "false",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": "filesystem://",
            "CXRQ_BROKER_DIR": str(workdir / "broker"),
            "CXRQ_MEDIA_ROOT": str(workdir / "media"),
            "CXRQ_LOG_FORMAT": "text",
            "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
            "CXRQ_MAX_QUEUE_DEPTH": "0",
        },
    )
    targets = {"this checkout": ROOT} | (
        {f"--old-root {args.old_root}": args.old_root} if args.old_root else {}
    )
    figures: dict = {"machine before": machine()}
    try:
        stack.migrate()
        stack.manage("create_client", "dicom-peers")
        stack.manage("dicom_sender", "add", CALLING, "--client", "dicom-peers")
        for name, root in targets.items():
            figures[name] = probe(stack, root, args)
        figures["machine after"] = machine()
    finally:
        stack.stop_all()
        if pg.returncode == 0:
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"drop database {db}"],
                capture_output=True,
            )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
