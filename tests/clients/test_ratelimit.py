"""The rate limiter's algorithm (GCRA) on both stores: Redis and the database."""

from __future__ import annotations

import time
import uuid

import pytest
from django.conf import settings

from backend.clients import ratelimit
from backend.clients.models import Client
from backend.clients.ratelimit import DatabaseStore, Rate, RedisStore

pytestmark = pytest.mark.django_db


def _redis_url() -> str:
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("Redis is not reachable in this run (start redis-server on 127.0.0.1:6379)")
    return settings.CELERY_BROKER_URL


@pytest.fixture(params=["database", "redis"])
def store(request):
    return DatabaseStore() if request.param == "database" else RedisStore(_redis_url())


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("600/min", Rate(600, 60.0)),
        ("5/s", Rate(5, 1.0)),
        ("2/hour", Rate(2, 3600.0)),
        ("1/day", Rate(1, 86400.0)),
    ],
)
def test_rates_parse_in_drf_syntax(text, rate):
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["", "0", "  "])
def test_zero_or_empty_is_no_limit(text):
    assert Rate.parse(text) is None


@pytest.mark.parametrize("text", ["ten/min", "10", "10/fortnight", "-1/min", "0/min", "1.5/s", "10/"])
def test_anything_else_is_refused_with_a_message(text):
    with pytest.raises(ValueError, match="not a rate"):
        Rate.parse(text)


def test_a_burst_gets_exactly_the_rate_then_waits_one_interval(store):
    key, rate = f"test:{uuid.uuid4()}", Rate(5, 1.0)
    assert [store.acquire(key, rate) for _ in range(5)] == [0.0] * 5
    wait = store.acquire(key, rate)
    assert 0.0 < wait <= 0.2 + 0.05  # one interval (1 s / 5), less the time the burst took
    time.sleep(wait + 0.02)
    assert store.acquire(key, rate) == 0.0  # room for exactly one more
    assert store.acquire(key, rate) > 0.0


def test_keys_do_not_share_a_count(store):
    rate = Rate(1, 60.0)
    a, b = f"test:{uuid.uuid4()}", f"test:{uuid.uuid4()}"
    assert store.acquire(a, rate) == 0.0
    assert store.acquire(a, rate) > 0.0
    assert store.acquire(b, rate) == 0.0


def test_a_request_may_cost_more_than_one_all_or_nothing(store):
    """A batch of n images takes n requests' room, or none of it."""
    key, rate = f"test:{uuid.uuid4()}", Rate(10, 60.0)
    assert store.acquire(key, rate, cost=6) == 0.0
    wait = store.acquire(key, rate, cost=6)  # 12 > 10: refused, until two intervals have passed
    assert 11.0 < wait <= 12.0
    assert store.acquire(key, rate, cost=4) == 0.0  # exactly the 10: the refusal took nothing
    assert store.acquire(key, rate) > 0.0
    other = f"test:{uuid.uuid4()}"
    assert store.acquire(other, rate, cost=10) == 0.0  # the whole burst at once
    assert store.acquire(other, rate) > 0.0


def test_a_cost_larger_than_the_rate_is_never_charged_as_the_whole_burst(store):
    """A cap at the burst let a batch of any size through for the price of rate.count images."""
    key, rate = f"test:{uuid.uuid4()}", Rate(10, 60.0)
    assert not ratelimit.fits(rate, 11) and ratelimit.fits(rate, 10)
    with pytest.raises(ValueError, match="never fit"):
        store.acquire(key, rate, cost=64)
    with pytest.raises(ValueError, match="never fit"):
        ratelimit.acquire(key, rate, cost=64)
    assert store.acquire(key, rate, cost=10) == 0.0  # nothing was taken


def test_a_refused_request_does_not_push_the_wait_further(store):
    """Hammering past the limit costs nothing: the wait only counts down."""
    key, rate = f"test:{uuid.uuid4()}", Rate(1, 2.0)
    store.acquire(key, rate)
    waits = [store.acquire(key, rate) for _ in range(20)]
    assert all(0 < w <= 2.0 for w in waits) and waits == sorted(waits, reverse=True)


def test_an_unreachable_store_lets_requests_through_and_logs(monkeypatch, caplog):
    monkeypatch.setattr(settings, "RATE_LIMIT_URL", "redis://127.0.0.1:1/0")
    ratelimit._store_for.cache_clear()
    try:
        assert ratelimit.acquire(f"test:{uuid.uuid4()}", Rate(1, 60.0)) == 0.0
    finally:
        ratelimit._store_for.cache_clear()
    assert "event=rate_limit_store_unavailable" in caplog.text


def test_a_client_rate_is_validated_in_the_admin_form():
    client = Client(name="x", upload_rate="many/min")
    with pytest.raises(Exception, match="not a rate"):
        client.full_clean()
    Client(name="y", upload_rate="10/min", read_rate="0").full_clean()


def test_a_mistyped_default_rate_fails_the_system_check(settings):
    from backend.clients.apps import check_rates

    settings.READ_RATE = "lots"
    assert [e.id for e in check_rates()] == ["cxrq.E001"]
    settings.READ_RATE = "100/min"
    assert check_rates() == []
