"""Test settings: plain overrides of base.

The database and broker come from DATABASE_URL / CELERY_BROKER_URL like
everywhere else; the test runner's plugin (tests/pytest_services.py) sets them
(PostgreSQL and Redis when reachable, embedded fallbacks otherwise), with
CXRQ_TEST_RUN_DIR, CXRQ_MEDIA_ROOT, CXRQ_BROKER_DIR and CXRQ_QUEUE, before these
settings load, and prints its choice once.
"""

from pathlib import Path

from .base import *  # noqa: F403
from .base import DATABASES, VAR_DIR, env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

TEST_RUN_DIR = Path(env.str("CXRQ_TEST_RUN_DIR", default=str(VAR_DIR / "test-run")))
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so a worker process the test starts can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_RUN_DIR / "test_cxrq.sqlite3")}

# Tests run real receivers on 127.0.0.1, as development does.
WEBHOOK_ALLOW_LOOPBACK = env.bool("CXRQ_WEBHOOK_ALLOW_LOOPBACK", default=True)

# A worker a test starts never tunes at first start (worker/runtime/autotune.py): the tune would
# cost up to its budget per test and leave a cache on this CPU that `make bench` would then apply.
AUTOTUNE_BUDGET_S = env.float("CXRQ_AUTOTUNE_BUDGET_S", default=0.0)
