"""`make run`: the API, one worker, the dispatcher (webhooks, purge) and the DICOM receiver in one command,
on whatever settings say.

With no DATABASE_URL / CELERY_BROKER_URL this is SQLite + kombu's filesystem
transport: no services needed. Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from backend.clients.models import Client
from backend.clients.services import development_key
from backend.dicomnet.services import DEVELOPMENT_AE_TITLE, development_sender
from backend.edge.server import server_argv


class Command(BaseCommand):
    help = "Serve the API on 127.0.0.1:PORT with one worker, the dispatcher and the DICOM receiver (development)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--dicom-port", type=int, default=settings.DICOM_PORT)

    def handle(self, *args, host: str, port: int, dicom_port: int, **options):
        db = settings.DATABASES["default"]
        base = f"http://{host}:{port}"
        dicom_env: dict[str, str] = {}
        if settings.DEV_API_KEY_FILE is not None:
            key_file = settings.DEV_API_KEY_FILE
            development_key(path=key_file)
            # dcmtk's default calling AE title sends as the development client: `storescu -xy` as it is.
            development_sender(client=Client.objects.get(name="development"))
            # and its default called title (ANY-SCP) is answered: no -aec needed.
            dicom_env = {
                "CXRQ_DICOM_REQUIRE_CALLED_AE_TITLE": os.environ.get(
                    "CXRQ_DICOM_REQUIRE_CALLED_AE_TITLE", "false"
                )
            }
            key_lines = [
                f"  API key  : in {key_file} (the 'development' client; kept across restarts)",
                f'  try      : curl -H "Authorization: Api-Key $(cat {key_file})" '
                f"-F image=@tests/data/cxr/00000001_000.png {base}/api/v1/jobs",
                f"  try DICOM: storescu -xy {host} {dicom_port} tests/data/cxr/*.dcm   "
                f"(calling AE {DEVELOPMENT_AE_TITLE} -> the 'development' client)",
            ]
        else:
            key_lines = ["  API key  : python manage.py create_client NAME (prints a key once)"]
        self.stdout.write(
            "\n".join(
                [
                    "cxrq is starting",
                    f"  database : {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('NAME')}",
                    f"  broker   : {settings.CELERY_BROKER_URL.split('@')[-1]}",
                    f"  open     : {base}/   (the web client: sign in with the API key below)",
                    f"  API      : {base}/api/v1/jobs   (health: {base}/api/v1/health)",
                    f"  admin    : {base}/admin/",
                    f"  DICOM    : AE title {settings.DICOM_AE_TITLE} on {host}:{dicom_port} "
                    "(senders: python manage.py dicom_sender list)"
                    if dicom_port
                    else "  DICOM    : no receiver (--dicom-port 0)",
                    "  add admin: .venv/bin/python manage.py createsuperuser",
                    f"  API docs : {base}/api/docs/ (Swagger UI), {base}/api/redoc/, schema {base}/api/schema/",
                    *key_lines,
                    "",
                ]
            )
        )
        # CXRQ_PUBLIC_URL defaults to the address printed above (the web's links, the webhooks').
        env = os.environ | {"CXRQ_PUBLIC_URL": os.environ.get("CXRQ_PUBLIC_URL", base)}
        # The worker runs as its own process (`python -m worker`); the backend imports nothing of it.
        worker = subprocess.Popen([sys.executable, "-m", "worker"], env=env)
        # The dispatcher: webhook deliveries, the overdue-delivery sweep and the retention purge.
        dispatcher = subprocess.Popen([sys.executable, "manage.py", "run_dispatcher"], env=env)
        # The production server (backend/edge/server.py), not runserver: the same deadlines,
        # limits and error pages a deployment has. CXRQ_WEB_WORKERS processes (default: one per
        # core, at most 4).
        web = subprocess.Popen(server_argv(f"{host}:{port}"), env=env)
        processes = (web, worker, dispatcher)
        # The DICOM receiver (C-STORE SCP), its own process as in a deployment. Not one the stack
        # stops for: a busy DICOM port leaves the API running (--dicom-port 0: no receiver).
        dicom = None
        if dicom_port:
            argv = [sys.executable, "manage.py", "run_dicom", "--address", host, "--port", str(dicom_port)]
            dicom = subprocess.Popen(argv, env=env | dicom_env)
        stop = _Stop()
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.signalled and all(proc.poll() is None for proc in processes):
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            everything = (*processes, dicom) if dicom is not None else processes
            for proc in everything:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in everything:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


class _Stop:
    """Ctrl-C or SIGTERM: stop the server and the worker, each with SIGTERM (a graceful stop)."""

    signalled = False

    def __call__(self, signum, frame) -> None:
        self.signalled = True
