"""`python -m worker [--concurrency N] [--name NAME] [--loglevel LEVEL]`: start a Celery worker
with the one command line (worker/command.py). make, docker-compose and runstack use this."""

from __future__ import annotations

import argparse
import os

from worker.command import celery_worker_argv


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("--concurrency", type=int, help="worker processes (default: the tuned value)")
    parser.add_argument("--name", help="node name (default: celery's)")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args()
    argv = celery_worker_argv(name=args.name, concurrency=args.concurrency, loglevel=args.loglevel)
    os.execv(argv[0], argv)  # the worker takes this process's place: signals reach it directly


if __name__ == "__main__":
    main()
