"""The embedded default's SQLite under concurrent writers, with the settings `make run` loads (dev),
read in a fresh process as `make run` reads them.

A transaction that reads and then writes while another connection commits a write in between is
the web's and the worker's everyday pattern. In SQLite's default (deferred) mode the second write
cannot wait for the lock: it fails at once with "database is locked", whatever the busy timeout.
With transactions that take the write lock when they begin (Django's transaction_mode IMMEDIATE),
the other writer waits its turn instead, and both commit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.factories import ROOT

CONCURRENT_WRITERS = """
import threading, django
django.setup()
from django.db import connection, transaction

with connection.cursor() as c:
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    c.execute("INSERT INTO t VALUES (1, 0)")

read_done, written = threading.Event(), threading.Event()
errors = []

def reader_then_writer():
    try:
        with transaction.atomic():
            with connection.cursor() as c:
                c.execute("SELECT v FROM t WHERE id = 1")
                read_done.set()
                written.wait(5)  # the other writer has committed (or is waiting for our lock)
                c.execute("UPDATE t SET v = v + 1 WHERE id = 1")
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        read_done.set()
        connection.close()

def writer():
    read_done.wait(5)
    try:
        timer = threading.Timer(0.5, written.set)  # IMMEDIATE: we wait for the reader; let it go on
        timer.start()
        with transaction.atomic():
            with connection.cursor() as c:
                c.execute("UPDATE t SET v = v + 10 WHERE id = 1")
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        written.set()
        connection.close()

threads = [threading.Thread(target=reader_then_writer), threading.Thread(target=writer)]
for t in threads: t.start()
for t in threads: t.join(30)
with connection.cursor() as c:
    c.execute("SELECT v FROM t WHERE id = 1")
    print("VALUE", c.fetchone()[0], "ERRORS", errors)
"""


def test_concurrent_writers_wait_for_the_lock_instead_of_failing(tmp_path: Path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "backend.settings.dev",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cxrq.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CXRQ_VAR_DIR": str(tmp_path / "var"),
        "CXRQ_LOG_LEVEL": "ERROR",
    }
    out = subprocess.run(
        [sys.executable, "-c", CONCURRENT_WRITERS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "VALUE 11 ERRORS []" in out.stdout, out.stdout + out.stderr[-2000:]
