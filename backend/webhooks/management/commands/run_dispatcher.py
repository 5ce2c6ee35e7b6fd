"""`manage.py run_dispatcher`: the Celery worker that delivers webhooks and runs the periodic
sweep and retention purge (backend/dispatcher.py). One per deployment is enough (it runs the
schedule); more are harmless for deliveries, each claimed by one of them."""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand


def dispatcher_argv(*, threads: int | None = None, beat: bool = True, loglevel: str = "INFO") -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "backend.dispatcher",
        "worker",
        "-Q",
        settings.WEBHOOK_QUEUE,
        "-P",
        "threads",
        f"--concurrency={threads or settings.WEBHOOK_THREADS}",
        f"--loglevel={loglevel}",
        "-n",
        "dispatcher@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if beat:
        schedule = settings.DISPATCHER_SCHEDULE_FILE
        schedule.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={schedule}"]
    return argv


class Command(BaseCommand):
    help = "Deliver webhooks and run the periodic sweep and retention purge (a Celery worker)."

    def add_arguments(self, parser):
        parser.add_argument("--threads", type=int, help="deliveries at once (default CXRQ_WEBHOOK_THREADS)")
        parser.add_argument(
            "--no-beat", action="store_true", help="deliveries only: another runs the schedule"
        )
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, threads: int | None, no_beat: bool, loglevel: str, **options):
        argv = dispatcher_argv(threads=threads, beat=not no_beat, loglevel=loglevel)
        os.execv(argv[0], argv)  # the worker takes this process's place: signals reach it directly
