"""Test settings: real PostgreSQL and Redis when reachable, embedded fallbacks otherwise.

tests/conftest.py prints which ones this run uses. A process started by a
test (a real Celery worker) gets DATABASE_URL / CELERY_BROKER_URL in its
environment and uses exactly those.
"""

import os
import socket
import tempfile
from pathlib import Path

import environ

from .base import *  # noqa: F403
from .base import DATABASES, env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Concurrent test runs on one server need distinct names (pytest-django adds "test_").
TEST_PG_URL = f"postgres://postgres@127.0.0.1:5432/{env.str('CXRQ_TEST_DB_NAME', default='cxrq')}"
TEST_REDIS_DB = env.int("CXRQ_TEST_REDIS_DB", default=13)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_xdist = os.environ.get("PYTEST_XDIST_WORKER", "main")
TEST_RUN_DIR = Path(os.environ.get("CXRQ_TEST_RUN_DIR") or tempfile.mkdtemp(prefix=f"cxrq-test-{_xdist}-"))
os.environ["CXRQ_TEST_RUN_DIR"] = str(TEST_RUN_DIR)  # shared with processes the tests start

if os.environ.get("DATABASE_URL"):
    TEST_DATABASE_SOURCE = "DATABASE_URL"
elif _reachable("127.0.0.1", 5432) and not os.environ.get("CXRQ_TEST_FORCE_SQLITE"):
    DATABASES = {"default": environ.Env.db_url_config(TEST_PG_URL)}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    TEST_DATABASE_SOURCE = "postgresql (127.0.0.1:5432, reachable)"
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(TEST_RUN_DIR / "cxrq.sqlite3"),
            "OPTIONS": {"timeout": 20},
            # A file, not :memory:, so a worker process can share the test database.
            "TEST": {"NAME": str(TEST_RUN_DIR / "test_cxrq.sqlite3")},
        }
    }
    TEST_DATABASE_SOURCE = "sqlite FALLBACK (PostgreSQL not reachable)"

if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
    TEST_BROKER_SOURCE = "CELERY_BROKER_URL"
elif _reachable("127.0.0.1", 6379) and not os.environ.get("CXRQ_TEST_FORCE_FILESYSTEM_BROKER"):
    CELERY_BROKER_URL = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
    TEST_BROKER_SOURCE = f"redis (127.0.0.1:6379 db {TEST_REDIS_DB}, reachable)"
else:
    CELERY_BROKER_URL = "filesystem://"
    TEST_BROKER_SOURCE = "filesystem FALLBACK (Redis not reachable)"

CELERY_BROKER_FS_DIR = TEST_RUN_DIR / "broker"
CELERY_QUEUE = os.environ.get("CXRQ_QUEUE") or f"cxrq-test-{_xdist}-{os.getpid()}"
os.environ["CXRQ_QUEUE"] = CELERY_QUEUE
MEDIA_ROOT = Path(os.environ.get("CXRQ_MEDIA_ROOT") or TEST_RUN_DIR / "media")
