"""Which database and broker this test run uses, decided once, before Django's settings load.

Loaded with `-p tests.pytest_services` (pyproject.toml), so it runs before
pytest-django reads the settings. PostgreSQL (127.0.0.1:5432) and Redis
(127.0.0.1:6379) when reachable, else the embedded fallbacks (SQLite, kombu's
filesystem transport); DATABASE_URL / CELERY_BROKER_URL given by the caller win,
and CXRQ_TEST_FORCE_SQLITE / CXRQ_TEST_FORCE_FILESYSTEM_BROKER force the fallbacks.
The choice goes into the environment, so real processes a test starts (workers,
web servers) use exactly the same services. The header and the summary say which.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _choose() -> tuple[str, str]:
    run_dir = os.environ.get("CXRQ_TEST_RUN_DIR") or tempfile.mkdtemp(prefix="cxrq-test-")
    os.environ["CXRQ_TEST_RUN_DIR"] = run_dir
    os.environ.setdefault("CXRQ_MEDIA_ROOT", str(Path(run_dir) / "media"))
    os.environ.setdefault("CXRQ_BROKER_DIR", str(Path(run_dir) / "broker"))
    os.environ.setdefault("CXRQ_QUEUE", f"cxrq-test-{os.getpid()}")
    os.environ.setdefault("CXRQ_WEBHOOK_QUEUE", f"cxrq-webhooks-test-{os.getpid()}")
    os.environ.setdefault("CXRQ_DISPATCHER_SCHEDULE_FILE", str(Path(run_dir) / "dispatcher-schedule"))

    if os.environ.get("DATABASE_URL"):
        database = "DATABASE_URL"
    elif _reachable("127.0.0.1", 5432) and not os.environ.get("CXRQ_TEST_FORCE_SQLITE"):
        name = os.environ.get("CXRQ_TEST_DB_NAME", "cxrq")
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
        database = "postgresql (127.0.0.1:5432, reachable)"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{Path(run_dir) / 'cxrq.sqlite3'}"
        database = "sqlite FALLBACK (PostgreSQL not reachable)"

    if os.environ.get("CELERY_BROKER_URL"):
        broker = "CELERY_BROKER_URL"
    elif _reachable("127.0.0.1", 6379) and not os.environ.get("CXRQ_TEST_FORCE_FILESYSTEM_BROKER"):
        db = int(os.environ.get("CXRQ_TEST_REDIS_DB", "13"))
        os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{db}"
        broker = f"redis (127.0.0.1:6379 db {db}, reachable)"
    else:
        os.environ["CELERY_BROKER_URL"] = "filesystem://"
        broker = "filesystem FALLBACK (Redis not reachable)"
    return database, broker


DATABASE_SOURCE, BROKER_SOURCE = _choose()


def pytest_report_header(config) -> list[str]:
    return [f"cxrq database: {DATABASE_SOURCE}", f"cxrq broker:   {BROKER_SOURCE}"]


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_line(f"cxrq ran against database: {DATABASE_SOURCE}; broker: {BROKER_SOURCE}")
