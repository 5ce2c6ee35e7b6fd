"""Page-number pagination that refuses a malformed page or page size instead of guessing.

DRF's PageNumberPagination answers `page=abc` or `page=0` with 404 (as if the page were merely
past the end) and replaces a bad `page_size` with the default without a word, so a client's bug
reads as "no more results" or as a different page size. Here both are 400 `invalid_page`; a
well-formed page past the last one stays 404 (it does not exist).
"""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from backend.core.exceptions import ApplicationError


class InvalidPage(ApplicationError):
    code = "invalid_page"
    status_code = 400
    default_message = "page and page_size must be whole numbers from 1 (page_size at most its maximum)."


def _whole_number(raw: str) -> int | None:
    raw = raw.strip()
    # isascii: str.isdigit() is also true of '¹' or '٣', which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        return None
    return int(raw)


class StrictPageNumberPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_number(self, request: Request, paginator) -> str | int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if raw in self.last_page_strings:
            return paginator.num_pages
        number = _whole_number(raw)
        if number is None or number < 1:
            raise InvalidPage(details={"page": raw[:64]})
        return number

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        size = _whole_number(raw)
        if size is None or not 1 <= size <= self.max_page_size:
            raise InvalidPage(details={"page_size": raw[:64], "max_page_size": self.max_page_size})
        return size
