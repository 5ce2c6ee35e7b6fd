"""Small DICOM files made with pydicom for the receiver's tests, and the peers that send them."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.factories import ROOT

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SAMPLES = sorted((ROOT / "tests" / "data" / "cxr").glob("*.dcm"))
CALLED_AE = "CXRQ"


def require_dcmtk() -> None:
    if not (shutil.which("storescu") and shutil.which("echoscu")):
        pytest.skip("dcmtk is not installed: apt-get install dcmtk")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cr_chest(
    *,
    seed: int = 0,
    body_part: str | None = "CHEST",
    modality: str = "CR",
    patient_id: str = "PID-0001",
    patient_name: str = "DOE^JANE",
    accession: str = "ACC-0001",
    study_uid: str | None = None,
    size: int = 64,
) -> bytes:
    """A small CR (12-bit, Explicit VR Little Endian) as a Part 10 file, its pixels from `seed`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.AccessionNumber = accession
    ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(seed).integers(0, 4096, size=(size, size), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def corrupt_sample() -> bytes:
    """The first sample with its JPEG stream replaced by noise: a well-formed dataset, undecodable pixels."""
    ds = pydicom.dcmread(SAMPLES[0])
    frame = (
        b"\xff\xd8" + np.random.default_rng(7).integers(0, 255, 4000, dtype=np.uint8).tobytes() + b"\xff\xd9"
    )
    ds.PixelData = pydicom.encaps.encapsulate([frame])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def storescu(
    port: int, *files: Path, aet: str = "MODALITY", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-xy", "-aet", aet, "-aec", CALLED_AE, *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def echoscu(port: int, *, aet: str = "MODALITY") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["echoscu", "-aet", aet, "-aec", CALLED_AE, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def changed(data: bytes, **attributes: object) -> bytes:
    """A Part 10 file with these attributes set (None deletes one) and a new SOP Instance UID:
    the same image as another instance of its study (a lateral beside the PA)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if "SOPClassUID" in attributes:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def non_image(
    sop_class_uid: str,
    *,
    modality: str,
    study_uid: str | None = None,
    patient_id: str = "PID-0001",
    patient_name: str = "DOE^JANE",
    manufacturer: str = "ACME",
) -> bytes:
    """A small object of a storage class without pixels (SR, presentation state, key objects) as a
    Part 10 file: what a PACS holds in a study beside its images."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.SeriesNumber = 42
    ds.InstanceNumber = 1
    if modality == "SR":
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
        ds.ContentSequence = []
    buf = io.BytesIO()
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def uids(data: bytes) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) of a Part 10 file: what its C-STORE request carries."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def pynetdicom_store(port: int, *files: Path, aet: str = "MODALITY") -> list[int]:
    """Each file sent as it is on disk (pynetdicom streams a file's dataset without decoding it
    when told to, where dcmtk's storescu refuses a cut file), in one association; the status of each."""
    from unittest import mock

    from pynetdicom import AE, _config

    headers = [
        pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]) for path in files
    ]
    ae = AE(ae_title=aet)
    for ds in headers:
        ae.add_requested_context(
            str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID)
        )
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED_AE)
    assert assoc.is_established
    try:
        with mock.patch.object(_config, "STORE_SEND_CHUNKED_DATASET", True):
            return [int(assoc.send_c_store(path).Status) for path in files]
    finally:
        assoc.release()
