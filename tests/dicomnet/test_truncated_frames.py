"""A DICOM whose compressed frame was cut short, sent over C-STORE to a real `run_dicom`: a failure
status for every compressed transfer syntax, success for the same file whole."""

from __future__ import annotations

import copy
import re

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from backend.jobs import dicom
from backend.jobs.models import Job
from tests.jobs.images import factories as f
from tests.jobs.images.truncation import SOURCES, cut_frame, intact

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _cstore(port: int, datasets: list[Dataset]) -> list[int]:
    """Each dataset sent in one association by pynetdicom, as MODALITY, in its own transfer syntax."""
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    for syntax in {str(ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
            ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRQ")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_over_c_store_a_cut_frame_gets_a_failure_status_and_an_intact_one_success(
    start_scp, sender, hospital
):
    scp = start_scp()
    sent: list[tuple[str, str, Dataset]] = []
    for syntax in SOURCES:
        for cut in ("intact", "50%", "end_marker_removed"):
            data = intact(syntax) if cut == "intact" else cut_frame(intact(syntax), cut)
            ds = f.read(data)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            sent.append((dicom.TRANSFER_SYNTAXES[syntax], cut, ds))
    statuses = _cstore(scp.port, [copy.deepcopy(ds) for _, _, ds in sent])
    answered = {(name, cut): status for (name, cut, _), status in zip(sent, statuses, strict=True)}
    expected = {(name, cut): 0x0000 if cut == "intact" else 0xC000 for name, cut, _ in sent}
    assert answered == expected
    assert Job.objects.filter(client=hospital).count() == len(SOURCES)
    refused = re.findall(r"event=dicom_refused code=invalid_image status=0xC000", scp.log)
    assert len(refused) == 2 * len(SOURCES)
    assert scp.alive
