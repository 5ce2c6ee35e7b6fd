"""Per-client rates on the jobs API: uploads and reads counted apart, every key of a client
sharing one count (a second key does not double a client's rate), every web process sharing
it too (backend/clients/ratelimit.py). Past the rate: 429 `rate_limited` with Retry-After.

A batch costs one per image, all or nothing: it goes through when every image fits, else it is
refused whole (429, Retry-After: when all of them will fit). A batch with more images than the
rate's whole count could never fit: 400 `too_many_images` (split it), not a 429 to retry for ever."""

from __future__ import annotations

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import BaseThrottle

from backend.clients import ratelimit
from backend.clients.models import Client
from backend.jobs import errors


class ClientRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        client = request.user
        if not isinstance(client, Client):
            return True  # no client (refused by authentication before this runs)
        scope = "read" if request.method in SAFE_METHODS else "upload"
        rate = ratelimit.Rate.parse(client.rate_for(scope))
        if rate is None:
            return True
        # A view may charge more than one for a request (a batch: one per image).
        cost = view.request_cost(request) if hasattr(view, "request_cost") else 1
        if not ratelimit.fits(rate, cost):
            raise errors.TooManyImages(
                f"This client may send at most {rate.count} images at once ({client.rate_for(scope)}).",
                details={
                    "images": cost,
                    "max_images": min(rate.count, settings.BATCH_MAX_IMAGES),
                    "rate": client.rate_for(scope),
                },
            )
        wait = ratelimit.acquire(f"{scope}:{client.pk}", rate, cost)
        if wait > 0:
            self._wait = wait
            return False
        return True

    def wait(self) -> float | None:
        return None if self._wait is None else float(ratelimit.retry_after_seconds(self._wait))
