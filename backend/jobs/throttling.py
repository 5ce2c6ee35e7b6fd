"""Per-client upload rate (429 + Retry-After): every key of a client shares one count.

Counters live in Django's cache: Redis when CXRQ_CACHE_URL is set (shared by
every web process), else per-process memory. If the cache is unreachable the
throttle lets the request through: a rate limit must not take uploads down.
"""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class UploadRateThrottle(SimpleRateThrottle):
    scope = "upload"

    def get_rate(self) -> str | None:
        return settings.UPLOAD_RATE or None

    def get_cache_key(self, request, view) -> str:
        # Uploads are authenticated (a client's key); the address is only a fallback.
        client = getattr(request.user, "pk", None)
        ident = f"client:{client}" if client is not None else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view) -> bool:
        if request.method != "POST":
            return True
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("event=throttle_cache_unavailable", exc_info=True)
            return True
