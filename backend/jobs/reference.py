"""A job's client reference: the client's own accession, order or correlation id.

1-64 characters from letters, digits, space and `. _ - : / #`, no leading or trailing space;
stored as given (not unique), sealed at rest with the return path's AES-GCM (backend/core/
phi.py, the job id as associated data) and matched through a keyed hash (`reference_hash`,
HMAC-SHA256 under a key derived from the PHI key), so `?reference=` never decrypts a row. It may be
an accession number or an order id, which identify a patient to whoever holds the RIS: it is never
logged, never in audit details, and shown only to the client whose job it is.
"""

from __future__ import annotations

import re

from backend.core import phi
from backend.jobs import errors

MAX_LENGTH = 64
# Letters (any script: accession numbers are not always ASCII), digits, space, . _ - : / #
_ALLOWED = re.compile(r"[^\W_]|[ ._\-:/#]")
ALLOWED_TEXT = "1-64 characters: letters, digits, space and . _ - : / # (no leading or trailing space)"


def is_valid(value: str) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_LENGTH
        and value == value.strip(" ")
        and all(_ALLOWED.fullmatch(ch) for ch in value)
    )


def check(value: str | None, *, field: str = "reference", index: int | None = None) -> str | None:
    """The reference as given; None when absent or empty; 400 invalid_reference otherwise.
    The details never repeat the value (it may identify a patient): only its length and place."""
    if value is None or value == "":  # an empty form field: no reference
        return None
    if not is_valid(value):
        details: dict = {"field": field, "length": len(value) if isinstance(value, str) else None}
        if index is not None:
            details["index"] = index
        details["allowed"] = ALLOWED_TEXT
        raise errors.InvalidReference(details=details)
    return value


def check_per_image(values: list[str] | None, *, images: int) -> list[str | None]:
    """A batch's references, one per image in order (or none at all): each checked."""
    if not values:
        return [None] * images
    if len(values) != images:
        raise errors.InvalidReference(
            "Send one reference per image, in the images' order, or none.",
            details={"field": "reference", "references": len(values), "images": images},
        )
    return [check(value, index=i) for i, value in enumerate(values)]


def from_dicom(accession_number: str | None) -> str | None:
    """An Accession Number as a default reference: as given when it is a valid reference, else none
    (a DICOM value this rule refuses is not a reason to refuse the image)."""
    if not accession_number:
        return None
    value = accession_number.strip(" ")
    return value if is_valid(value) else None


def seal(value: str, *, job_id: str) -> bytes:
    return phi.seal({"reference": value}, context=f"reference:{job_id}")


def open_sealed(sealed: bytes, *, job_id: str) -> str | None:
    try:
        return phi.open_sealed(sealed, context=f"reference:{job_id}").get("reference")
    except phi.PhiUnreadable:
        return None


def hash_of(value: str, *, client_id: str) -> str:
    """Keyed hash of a client's reference (the client in it: equal references of two clients differ)."""
    return phi.identifier_hash("job-reference", str(client_id), value)
