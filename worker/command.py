"""The one command line that starts a Celery worker (make run, the load test, the tests)."""

from __future__ import annotations

import sys


def celery_worker_argv(
    *, name: str | None = None, concurrency: int | None = None, loglevel: str = "INFO"
) -> list[str]:
    """Prefork worker on the cxrq app. No gossip/mingle/broker heartbeat: workers report
    to the database (WorkerHeartbeat), not to each other. Without `concurrency`, the
    app's worker_concurrency applies (settings.WORKER_CONCURRENCY, from the tuned file)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if name:
        argv += ["-n", f"{name}@%h"]
    return argv
