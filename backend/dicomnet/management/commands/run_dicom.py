"""`make dicom`: the DICOM receiver (C-STORE / C-ECHO SCP) as its own process. SIGTERM or Ctrl-C stops it."""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from backend.dicomnet.scp import serve


class Command(BaseCommand):
    help = "Receive DICOM images (C-STORE) from the configured senders, each one becoming a job."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=settings.DICOM_PORT)
        parser.add_argument("--address", default=settings.DICOM_BIND_ADDRESS)

    def handle(self, *args, port: int, address: str, **options):
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write(f"DICOM receiver: AE title {settings.DICOM_AE_TITLE} on {address}:{port}")
        self.stdout.flush()
        serve(address=address, port=port, stop=stop)
