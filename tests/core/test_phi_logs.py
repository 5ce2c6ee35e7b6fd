"""No identifier from an image reaches a log: not in cxrq's own lines, and not in what pydicom,
highdicom and pynetdicom log or warn about the values they read.

highdicom's person-name check warns with the name itself when it has no `^` (`The string
"SMITHPROBEJOHN" is unlikely to represent ...`); Django and Celery route warnings into logging
(`py.warnings`), where backend.core.logging.DicomValuesFilter withholds their text.

The system test sends marker PHI through every DICOM path of the real processes (web, Celery
worker, dispatcher, DICOM receiver, a dcmtk storescp as the PACS) and searches everything they
wrote.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from django.conf import settings
from pydicom.encaps import encapsulate

from backend.core.logging import DicomValuesFilter
from backend.dicomnet import services as dicomnet
from backend.jobs.models import Job, JobStatus
from backend.pacs import services as pacs
from backend.pacs.models import PacsDelivery, PacsDeliveryStatus
from tests.dicomnet.conftest import ScpProcess
from tests.dicomnet.factories import cr_chest, require_dcmtk, storescu, write
from tests.factories import ROOT, client_and_key, process_env
from tests.pacs.conftest import StoreScp

# --- the filter, in this process -----------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(DicomValuesFilter())
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines():
    handler = _Lines()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler.lines
    root.removeHandler(handler)


def test_highdicoms_person_name_warning_is_logged_without_the_name(lines):
    from highdicom.valuerep import check_person_name

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_person_name("SMITHPROBEJOHN")
    (warning,) = caught
    # What logging.captureWarnings does with it (pytest holds the warnings machinery in a test).
    text = warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno)
    assert "SMITHPROBEJOHN" in text
    logging.getLogger("py.warnings").warning("%s", text)
    (line,) = [line for line in lines if line.startswith("py.warnings")]
    assert "SMITHPROBEJOHN" not in line
    assert "event=library_warning category=UserWarning source=" in line and "text=withheld" in line


def test_what_the_dicom_libraries_log_is_withheld_but_pynetdicoms_protocol_warnings_are_kept(lines, caplog):
    # The receiver (scp.py) logs pynetdicom at WARNING, the PACS sender (scu.py) at ERROR: which
    # one a test process imported last must not decide what this test sees. The filter is tested.
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    logging.getLogger("pydicom").error("Invalid value for VR PN: 'SMITHPROBEJOHN'")
    logging.getLogger("highdicom.sr.templates").warning("value %s", "SMITHPROBEJOHN")
    try:
        raise ValueError("could not encode 'SMITHPROBEJOHN'")
    except ValueError as exc:
        logging.getLogger("pynetdicom.dsutils").exception(exc)
    logging.getLogger("pynetdicom.assoc").info("Patient Name: SMITHPROBEJOHN")
    logging.getLogger("pynetdicom.acse").warning("Association Aborted (A-ABORT)")
    logging.getLogger("backend.jobs").info("event=kept")
    text = "\n".join(lines)
    assert "SMITHPROBEJOHN" not in text
    assert "pydicom ERROR event=library_log source=pydicom text=withheld" in text
    assert "event=library_log source=pynetdicom.dsutils text=withheld error=ValueError" in text
    assert "Association Aborted (A-ABORT)" in text and "event=kept" in text


def test_every_process_logs_through_the_filter():
    config = settings.LOGGING
    assert "dicom_values" in config["handlers"]["console"]["filters"]
    assert "dicom_values" in config["loggers"]["py.warnings"]["filters"]
    assert config["filters"]["dicom_values"]["()"] == "backend.core.logging.DicomValuesFilter"


def test_a_process_set_up_by_django_logs_a_warning_without_its_text():
    """The web, the DICOM receiver and `make run` are set up by django.setup() alone (no Celery):
    a warning there went straight to stderr, name and all, before LOGGING_CONFIG routed it."""
    code = (
        "import django, warnings; django.setup(); "
        "from highdicom.valuerep import check_person_name; check_person_name('SMITHPROBEJOHN')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=process_env({"CXRQ_LOG_FORMAT": "text"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SMITHPROBEJOHN" not in out.stdout + out.stderr
    assert "logger=py.warnings" in out.stderr and "event=library_warning category=UserWarning" in out.stderr


def test_the_handlers_celerys_worker_installs_get_the_filter():
    """Celery's worker replaces the root logger's handlers with its own, then sends
    after_setup_logger: worker/celery_app.py adds the filter to them there."""
    from celery.signals import after_setup_logger

    import worker.celery_app  # noqa: F401 - connects the receiver

    celerys = logging.getLogger(f"celery-root-{uuid.uuid4().hex}")
    handler = logging.StreamHandler(io.StringIO())
    celerys.addHandler(handler)
    after_setup_logger.send(
        sender=None, logger=celerys, loglevel=logging.INFO, logfile=None, format="", colorize=False
    )
    assert [type(f) for f in handler.filters] == [DicomValuesFilter]
    celerys.warning("%s", "kept")
    record = logging.LogRecord(
        "highdicom.sr", logging.WARNING, __file__, 1, "name %s", ("SMITHPROBEJOHN",), None
    )
    handler.handle(record)
    assert "SMITHPROBEJOHN" not in handler.stream.getvalue() and "kept" in handler.stream.getvalue()


# --- the real processes --------------------------------------------------------------------------

FAKE_WORKER = {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "20"}
DEADLINE_S = 120


def _markers() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8].upper()
    return {
        "name_without_caret": f"SMITHPROBE{tag}JOHN",
        "family": f"DOEPROBE{tag}",
        "given": f"JANEPROBE{tag}",
        "patient_id": f"PIDPROBE{tag}",
        "accession": f"ACCPROBE{tag}",
        # A client reference (backend/jobs/reference.py) sent with an upload and asked for in a filter.
        "reference": f"REFPROBE{tag}",
    }


def _corrupt(data: bytes) -> bytes:
    """A well-formed file whose JPEG frame is noise between its markers."""
    ds = pydicom.dcmread(io.BytesIO(data))
    noise = np.random.default_rng(7).integers(0, 255, 4000, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([b"\xff\xd8" + noise + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLosslessSV1
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _until(what: str, check, deadline: float, logs) -> object:
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"{what} not seen in time\n" + "\n".join(log()[-2500:] for log in logs))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_marker_phi_sent_through_every_dicom_path_is_in_no_log(
    start_worker, start_dispatcher, start_web, tmp_path
):
    require_dcmtk()
    began = time.time()
    deadline = time.monotonic() + DEADLINE_S
    markers = _markers()
    hospital, key = client_and_key("hospital-phi")
    # Every process at DEBUG: whatever a library says there is searched too.
    env = {**FAKE_WORKER, "CXRQ_LOG_LEVEL": "DEBUG"}
    worker = start_worker(env)
    dispatcher = start_dispatcher({"CXRQ_LOG_LEVEL": "DEBUG"})
    web = start_web({"CXRQ_LOG_LEVEL": "DEBUG"})
    receiver = ScpProcess(tmp_path / "run_dicom.log", {"CXRQ_LOG_LEVEL": "DEBUG"})
    peer = StoreScp(tmp_path / "pacs")
    try:
        receiver.wait_ready()
        dicomnet.sender_add(ae_title="MODALITY", client=hospital, priority="stat", allowed_host="127.0.0.1")
        pacs.destination_add(client=hospital, name="pacs", ae_title="PACS", host="127.0.0.1", port=peer.port)
        worker.wait_ready()
        dispatcher.wait_ready()
        web.wait_ready()
        logs = [lambda: receiver.log, lambda: worker.log, lambda: dispatcher.log, lambda: web.log]
        api = requests.Session()
        api.headers["Authorization"] = f"Api-Key {key}"

        def instance(seed: int, name: str, **kwargs) -> bytes:
            return cr_chest(
                seed=seed,
                patient_name=name,
                patient_id=markers["patient_id"],
                accession=markers["accession"],
                **kwargs,
            )

        no_caret = instance(1, markers["name_without_caret"])
        with_caret = instance(2, f"{markers['family']}^{markers['given']}")
        # C-STORE: two scored instances (their SR goes back to the PACS), a hand, a truncated one.
        folder = tmp_path / "send"
        sent = storescu(
            receiver.port,
            write(folder, "a.dcm", no_caret),
            write(folder, "b.dcm", with_caret),
            aet="MODALITY",
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        # Not scored (its status is the receiver's business), and refused as corrupt.
        storescu(
            receiver.port,
            write(folder, "hand.dcm", instance(3, markers["name_without_caret"], body_part="HAND")),
        )
        cut = storescu(
            receiver.port, write(folder, "cut.dcm", _corrupt(instance(4, markers["name_without_caret"])))
        )
        assert cut.returncode != 0
        # HTTP: an upload, a hand, a truncated one.
        uploads = {}
        for name, data, status in (
            ("up.dcm", instance(5, markers["name_without_caret"]), 202),
            ("hand.dcm", instance(6, markers["name_without_caret"], body_part="HAND"), 422),
            ("cut.dcm", _corrupt(instance(7, markers["name_without_caret"])), 400),
        ):
            response = api.post(
                f"{web.url}/api/v1/jobs",
                files={"image": (name, data)},
                data={"reference": markers["reference"]},
            )
            assert response.status_code == status, response.text
            uploads[name] = response.json()
        listed = api.get(f"{web.url}/api/v1/jobs", params={"reference": markers["reference"]}).json()
        assert [j["reference"] for j in listed["results"]] == [markers["reference"]]
        assert api.get(f"{web.url}/api/v1/jobs", params={"reference": "bad;ref"}).status_code == 400

        jobs = _until(
            "three jobs",
            lambda: (lambda q: q if len(q) == 3 else None)(list(Job.objects.filter(client=hospital))),
            deadline,
            logs,
        )
        _until(
            "every job scored",
            lambda: Job.objects.filter(id__in=[j.id for j in jobs], status=JobStatus.SUCCEEDED).count() == 3,
            deadline,
            logs,
        )
        for job in jobs:
            sr = api.get(f"{web.url}/api/v1/jobs/{job.id}/sr.dcm")
            assert sr.status_code == 200, sr.text
            fhir = api.get(f"{web.url}/api/v1/jobs/{job.id}/fhir")
            assert fhir.status_code == 200, fhir.text
        _until(
            "both SRs delivered to the PACS",
            lambda: PacsDelivery.objects.filter(status=PacsDeliveryStatus.DELIVERED).count() == 2,
            deadline,
            logs,
        )
        delivered = b"".join(p.read_bytes() for p in peer.folder.iterdir())
    finally:
        receiver.stop()
        peer.stop()
        for proc in (worker, dispatcher):
            proc.stop()

    # The markers did travel: the PACS holds them (the SRs filed back in the patient's study).
    assert markers["name_without_caret"].encode() in delivered and markers["family"].encode() in delivered
    written = {
        "run_dicom": receiver.log_path,
        "worker": worker.log_path,
        "dispatcher": dispatcher.log_path,
        "web": web.log_path,
        **{str(p): p for p in Path(settings.VAR_DIR).rglob("*.log") if p.stat().st_mtime >= began},
    }
    texts = {name: Path(path).read_text(errors="replace") for name, path in written.items()}
    found = {
        (name, marker): text[max(0, text.find(value) - 300) : text.find(value) + 100]
        for name, text in texts.items()
        for marker, value in markers.items()
        if value in text
    }
    assert not found, found
