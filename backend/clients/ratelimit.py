"""Rate limits shared by every web process: GCRA over one value per client and scope.

GCRA (the generic cell rate algorithm) keeps a single number per key, the
theoretical arrival time (TAT). For a rate of N per period P, each request
moves the TAT on by T = P / N; a request is refused when that would put the TAT
more than P ahead of now. So N requests may come at once, then one every T:
exactly N in any window of length P, with no boundary burst (a fixed window
lets 2N through across its edge) and no per-request log to keep.

Where the count lives, so that every web process shares it:
- Redis (CXRQ_RATE_LIMIT_URL; by default CXRQ_CACHE_URL, else the broker when
  it is Redis): one Lua script per request, atomic on the server, on the
  server's clock.
- The database otherwise (the embedded default): one conditional UPDATE per
  request, atomic in SQLite and PostgreSQL alike.
A store that cannot be reached lets the request through and logs it: a rate
limiter must not take the API down.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from django.conf import settings
from django.db.models import F, Value
from django.db.models.functions import Greatest

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_UNITS |= {"d": 86400, "day": 86400}


@dataclass(frozen=True)
class Rate:
    count: int
    period: float  # seconds

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """`600/min` (s, min, h, day and DRF's spellings); `0` or empty: no limit (None)."""
        text = (text or "").strip()
        if text in ("", "0"):
            return None
        count, slash, unit = text.partition("/")
        if (
            not slash
            or not (count.isascii() and count.isdigit())
            or int(count) <= 0
            or unit.strip().lower() not in _UNITS
        ):
            raise ValueError(f"not a rate: {text!r} (expected N/s, N/min, N/h or N/day, or 0)")
        return cls(count=int(count), period=float(_UNITS[unit.strip().lower()]))

    @property
    def interval(self) -> float:
        return self.period / self.count


class Store(Protocol):
    def acquire(self, key: str, rate: Rate, cost: int = 1) -> float:
        """Take `cost` requests' room under `rate` (a batch of n images costs n), all or nothing:
        0.0 when allowed, else seconds until it would be. The cost is at most rate.count (callers
        refuse a larger request first, see fits())."""


# KEYS[1]: the bucket; ARGV: interval (times the cost), period (seconds). Returns "0" or the wait.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > period then
  return tostring(new_tat - now - period)
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1)
return '0'
"""


class RedisStore:
    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self.script = self.client.register_script(_GCRA_LUA)

    def acquire(self, key: str, rate: Rate, cost: int = 1) -> float:
        step = rate.interval * _cost(rate, cost)
        return float(self.script(keys=[f"cxrq:rate:{key}"], args=[repr(step), repr(rate.period)]))


class DatabaseStore:
    def acquire(self, key: str, rate: Rate, cost: int = 1) -> float:
        from backend.clients.models import RateBucket

        now = time.time()
        step = rate.interval * _cost(rate, cost)
        # Allowed iff max(tat, now) + step - now <= period, i.e. tat <= now + period - step.
        latest_allowed = now + rate.period - step
        allowed = RateBucket.objects.filter(key=key, tat__lte=latest_allowed).update(
            tat=Greatest(F("tat"), Value(now)) + step
        )
        if allowed:
            return 0.0
        tat = RateBucket.objects.filter(key=key).values_list("tat", flat=True).first()
        if tat is None:  # a first request: make the bucket, then take from it
            RateBucket.objects.bulk_create([RateBucket(key=key, tat=now)], ignore_conflicts=True)
            return self.acquire(key, rate, cost)
        return max(tat - latest_allowed, 0.001)


@lru_cache(maxsize=4)
def _store_for(url: str) -> Store:
    return RedisStore(url) if url else DatabaseStore()


def store() -> Store:
    return _store_for(settings.RATE_LIMIT_URL)


def _cost(rate: Rate, cost: int) -> int:
    """At least one. Never capped at the burst: a cap let a batch of any size through for the
    price of rate.count images, once a period."""
    cost = max(cost, 1)
    if not fits(rate, cost):
        raise ValueError(f"a cost of {cost} can never fit a rate of {rate.count}")
    return cost


def fits(rate: Rate, cost: int) -> bool:
    """Whether a request of `cost` can ever go through under `rate` (into an empty bucket)."""
    return cost <= rate.count


def acquire(key: str, rate: Rate, cost: int = 1) -> float:
    """0.0 when a request of `cost` under `key` may go ahead, else the seconds to wait. Fails open.
    A cost past fits() is the caller's to refuse (ValueError here: no wait would ever let it in)."""
    _cost(rate, cost)
    try:
        return store().acquire(key, rate, cost)
    except Exception:
        logger.warning("event=rate_limit_store_unavailable key=%s", key, exc_info=True)
        return 0.0


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))
