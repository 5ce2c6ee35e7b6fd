"""prometheus_client's multiprocess mode, for the servers that run several processes.

The web is a gunicorn master with several uvicorn worker processes, the worker a Celery main
process with a pool of children: a request or a batch is counted in whichever process ran it.
In multiprocess mode each process writes its counters and histograms to memory-mapped files in
one folder, and a scrape sums the folder (MultiProcessCollector), whichever process answers it.

prometheus_client reads PROMETHEUS_MULTIPROC_DIR once, when it is first imported, so the folder
is chosen before that, by the process at the root of the tree, before it forks: gunicorn's
master (which sets Django up, and so runs `prepare_web_server`, before forking its workers) and
Celery's main process (worker/metrics_server.py, at worker_init). The folder is new at every
start (no stale counts from a previous run, nor from another server on the same machine) and is
removed when its owner exits. Its children find it in the environment.

No process here keeps a gauge in these files, so a worker process that dies needs no clean-up:
its counts stay part of the totals, as a counter's should.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
# The pid of the process that made the folder: its children use it, anyone else makes their own.
OWNER_ENV = "CXRQ_METRICS_DIR_OWNER"


def directory() -> Path | None:
    """This process's metrics folder, when it runs in multiprocess mode."""
    path = os.environ.get(ENV)
    return Path(path) if path and os.path.isdir(path) else None


def _inherited() -> bool:
    return os.environ.get(OWNER_ENV) == str(os.getppid()) and directory() is not None


def owned_here() -> bool:
    """This process made the folder (it is the server's root, which serves or removes it)."""
    return os.environ.get(OWNER_ENV) == str(os.getpid()) and directory() is not None


def start_private_directory(role: str) -> Path | None:
    """Make a fresh folder for this process and the processes it will fork, and remove it at
    exit. None (logged) when prometheus_client was imported already: too late to switch."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        logger.error(
            "event=metrics_multiprocess_unavailable role=%s reason=prometheus_client_imported_first", role
        )
        return None
    path = Path(tempfile.mkdtemp(prefix=f"cxrq-{role}-metrics-", dir=settings.METRICS_DIR or None))
    os.environ[ENV] = str(path)
    os.environ[OWNER_ENV] = str(os.getpid())
    atexit.register(remove_directory, path, os.getpid())
    logger.info("event=metrics_directory role=%s path=%s", role, path)
    return path


def remove_directory(path: Path, owner: int) -> None:
    """Forked children inherit atexit handlers: only the owner removes the folder. A child
    still exiting may add a file while it goes, so a few tries."""
    if os.getpid() != owner:
        return
    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.1)


def _main_is(program: str) -> bool:
    """This process was started as `python -m <program>` or as the `<program>` script."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.split(".")[0] == program:
        return True
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == program


def prepare_web_server() -> Path | None:
    """In gunicorn's master (its workers are forked from it and do not start again): a folder for
    its worker processes. Elsewhere (manage.py, tests, a worker process that inherited its
    master's folder) nothing changes."""
    if not _main_is("gunicorn") or _inherited():
        return None
    return start_private_directory("web")


def prepare_worker() -> Path | None:
    """In a Celery worker's main process (`celery ... worker`), before anything imports
    prometheus_client (Celery's Django fixup runs the system checks, which import every
    middleware, before the worker_init signal): a folder for its pool's children."""
    if not (_main_is("celery") and "worker" in sys.argv[1:]) or _inherited():
        return None
    return start_private_directory("worker")
