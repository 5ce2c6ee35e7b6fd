"""If-None-Match as RFC 9110 §13.1.2 has it, for every view that sends an ETag.

- `*` matches whenever the resource has a current representation (a view that got this far
  has one: an unknown or another client's resource was 404 before any ETag was made);
- otherwise the header is a list of entity tags, compared weakly: `W/"x"` and `"x"` match
  `"x"` alike (a cache or proxy may have weakened the tag; If-None-Match never needs byte
  equality);
- anything in the header that is not an entity tag is ignored (a malformed header matches
  nothing, so the client gets the full answer rather than a wrong 304).

Callers: backend/jobs/api.py (a job, a batch), backend/web/views.py (the image preview, the
watched jobs' states) and backend/interop/api.py (a job's SR and FHIR report).
"""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.http import parse_etags


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def if_none_match(request: HttpRequest, etag: str) -> bool:
    """Whether the request's If-None-Match matches `etag` (then a GET or HEAD is answered 304)."""
    header = request.headers.get("If-None-Match", "")
    if not header.strip():
        return False
    tags = parse_etags(header)
    if tags == ["*"]:
        return True
    return _opaque(etag) in {_opaque(tag) for tag in tags}
