"""A DICOM with planted PHI markers, and a search for them everywhere the platform keeps anything."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import connection
from pydicom.encaps import encapsulate, generate_frames

from tests.factories import sample_bytes
from tests.jobs.images import factories as f

MARKERS = {
    "name": "QXPHI^ZELDA^MARIETTA",
    "id": "QXPHI-ID-90210",
    "birth_date": "19420817",
    "institution": "QXPHI Saint Elsewhere Hospital",
    "address": "QXPHI 12 Harbour Road",
    "physician": "QXPHI^DOCTOR^HOUSE",
    "accession": "QXPHIACC77",
    "description": "QXPHI-STUDY-DESCRIPTION",
    "comment": "QXPHI-IMAGE-COMMENT",
    "other_id": "QXPHI-OTHER-ID",
    "uid": "1.2.826.0.1.3680043.99.424242424242",
    "view": "QXPHIVIEW",
    "private": "QXPHI-PRIVATE-TAG",
}
JPEG_COMMENT = b"QXPHI-IN-THE-JPEG-STREAM"
FILENAME = "QXPHI_ZELDA_MARIETTA_19420817.dcm"
CONTENT_TYPE = "application/dicom; name=QXPHI-CONTENT-TYPE"


def needles() -> list[str]:
    """Every marker, and the pieces of the person name and birth date a careless copy might keep."""
    values = [
        *MARKERS.values(),
        JPEG_COMMENT.decode(),
        "QXPHI",
        "ZELDA",
        "MARIETTA",
        "1942-08-17",
        "42424242",
    ]
    return sorted(set(values))


def phi_dicom() -> bytes:
    """The JPEG-baseline MONOCHROME2 sample with markers in the header, a private tag, a sequence,
    the file name, and a COM segment inside the compressed pixel stream."""
    ds = f.with_phi(f.read(sample_bytes(f.MONO2_SAMPLE)), MARKERS)
    [frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([f.plant_jpeg_comment(frame, JPEG_COMMENT)])
    ds["PixelData"].is_undefined_length = True
    data = f.to_bytes(ds)
    for needle in (MARKERS["name"], MARKERS["id"], MARKERS["institution"]):
        assert needle.encode() in data  # the test file does carry them
    assert JPEG_COMMENT in data
    return data


def without_reference(body):
    """A job's JSON (or a page of them) less its `reference`: a DICOM upload's Accession Number is its
    job's reference by design (sealed at rest, shown only to its client: docs/api.md), the one
    identifier an answer may carry; everything else is searched for planted PHI."""
    if isinstance(body, list):
        return [without_reference(b) for b in body]
    if isinstance(body, dict):
        return {k: without_reference(v) for k, v in body.items() if k != "reference"}
    return body


def found_in(text: str | bytes) -> list[str]:
    blob = text.lower() if isinstance(text, str) else text.decode("latin-1").lower()
    return [n for n in needles() if n.lower() in blob]


def dump_database() -> str:
    """Every row of every table, as text."""
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                lines.append(f"{table}: {json.dumps(row, default=str)}")
    return "\n".join(lines)


def stored_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}
