"""One C-STORE association to a PACS (pynetdicom): the SR (and the Secondary Capture) in, an outcome out.

Each storage class is proposed with Explicit VR Little Endian first (how the builders encode them)
and Implicit VR Little Endian as the fallback every SCP must accept; pynetdicom re-encodes to
whichever the PACS takes. Every wait is bounded (TCP connect, ACSE, DIMSE, network idle), so a PACS
that answers nothing holds a dispatcher thread for at most a few timeouts. Nothing here logs or
returns what the datasets hold (their patient and study are PHI): only statuses and error kinds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.status import code_to_category

from backend.pacs.outcomes import StoreOutcome

# pynetdicom's INFO/DEBUG lines quote the datasets' UIDs; its errors (association level) stay.
logging.getLogger("pynetdicom").setLevel(logging.ERROR)

SUCCESS = 0x0000


def _stored(status: int) -> bool:
    """Success, or a warning (coercion of data elements, elements discarded): the PACS kept it."""
    return code_to_category(status) in ("Success", "Warning")


def store(
    *,
    datasets: Sequence[pydicom.Dataset],
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    timeout: float,
) -> StoreOutcome:
    ae = AE(ae_title=calling_ae_title)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    opened: list[bool] = []
    assoc = ae.associate(
        host,
        port,
        ae_title=called_ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda _event: opened.append(True))],
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            rsp = assoc.acceptor.primitive
            return StoreOutcome(
                0, None, f"association_rejected: {rsp.result_str}, {rsp.source_str}, {rsp.reason_str}"
            )
        if not opened:
            return StoreOutcome(0, None, f"connect_error: no connection to {host}:{port}")
        if assoc.is_aborted and not assoc.accepted_contexts and assoc.rejected_contexts:
            return StoreOutcome(0, None, "association_aborted: no storage class accepted")
        return StoreOutcome(0, None, "association_aborted")
    stored, status_code, error = 0, None, ""
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except ValueError:  # no accepted context for this class
                error = f"sop_class_not_accepted: {ds.SOPClassUID}"
                break
            if not status or "Status" not in status:
                error = "no_response"  # DIMSE timeout, or the association ended
                break
            status_code = int(status.Status)
            if not _stored(status_code):
                comment = str(status.get("ErrorComment", "") or "")[:64]
                error = f"dimse_0x{status_code:04X}" + (f": {comment}" if comment else "")
                break
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return StoreOutcome(stored, status_code, error)
