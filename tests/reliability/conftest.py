from __future__ import annotations

import socket

import pytest

from tests.reliability.harness import (
    STACK_CLIENT,
    PrivatePostgres,
    PrivateRedis,
    SharedPostgresDatabase,
    Stack,
)


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def private_redis(tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def shared_database():
    if not _pg_reachable():
        pytest.skip("fault tests need PostgreSQL (SKIP LOCKED, concurrent writers); none reachable")
    db = SharedPostgresDatabase()
    db.create()
    yield db
    db.drop()


@pytest.fixture
def private_postgres(tmp_path):
    pg = PrivatePostgres(tmp_path / "pg")
    pg.init()
    yield pg
    pg.destroy()


@pytest.fixture
def make_stack(tmp_path):
    stacks: list[Stack] = []

    def make(database_url: str, broker_url: str, **env: str) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", database_url, broker_url, **env)
        stacks.append(stack)
        stack.migrate()
        stack.create_client(STACK_CLIENT)
        return stack

    yield make
    for stack in stacks:
        stack.stop_all()
