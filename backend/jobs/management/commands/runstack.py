"""`make run`: the API, one worker, the dispatcher (webhooks, purge) and the DICOM receiver in one command,
on whatever settings say.

With no DATABASE_URL / CELERY_BROKER_URL this is SQLite + the filesystem broker
(backend/broker_transports.py): no services needed. A component that dies is restarted with
backoff while the others keep serving, and health says which is down meanwhile (the state file
CXRQ_RUNSTACK_STATE_FILE). Ctrl-C or SIGTERM stops everything within CXRQ_RUNSTACK_GRACE_SECONDS:
SIGTERM first, then SIGKILL to whatever is left.

The console stays readable: Celery's banner is off (--quiet) and gunicorn logs warnings only, and
once a worker started by this stack has reported in (its heartbeat in the database), one line says
the stack is ready to score, with the address and the weights, and the key lines are printed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections, connection
from django.utils import timezone

from backend.clients.models import Client
from backend.clients.services import development_key
from backend.dicomnet.services import DEVELOPMENT_AE_TITLE, development_sender
from backend.edge.server import server_argv
from backend.jobs.models import WorkerHeartbeat


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
        # This interpreter as a fresh shell reaches it (no virtualenv active, VENV anywhere).
        manage = f"{_shell_path(sys.executable)} manage.py"
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
            ]
            if dicom_port:
                key_lines.append(
                    f"  try DICOM: storescu -xy {host} {dicom_port} tests/data/cxr/*.dcm   "
                    f"(calling AE {DEVELOPMENT_AE_TITLE} -> the 'development' client)"
                )
        else:
            key_lines = [f"  API key  : {manage} create_client NAME (prints a key once)"]
        started = timezone.now()
        self.stdout.write(
            "\n".join(
                [
                    "cxrq is starting (one more line says when a worker is up and it can score)",
                    f"  database : {db['ENGINE'].rsplit('.', 1)[-1]} {db.get('NAME')}",
                    f"  broker   : {settings.CELERY_BROKER_URL.split('@')[-1]}",
                    f"  open     : {base}/   (the web client: sign in with the API key below)",
                    f"  API      : {base}/api/v1/jobs   (health: {base}/api/v1/health)",
                    f"  admin    : {base}/admin/",
                    f"  DICOM    : AE title {settings.DICOM_AE_TITLE} on {host}:{dicom_port} "
                    f"(senders: {manage} dicom_sender list)"
                    if dicom_port
                    else "  DICOM    : no receiver (--dicom-port 0)",
                    f"  add admin: {manage} createsuperuser",
                    f"  API docs : {base}/api/docs/ (Swagger UI), {base}/api/redoc/, schema {base}/api/schema/",
                    *key_lines,
                    "",
                ]
            )
        )
        # CXRQ_PUBLIC_URL defaults to the address printed above (the web's links, the webhooks').
        env = os.environ | {"CXRQ_PUBLIC_URL": os.environ.get("CXRQ_PUBLIC_URL", base)}
        # Where the components' states are written for health (backend/jobs/health.py) to read:
        # one file per port, so two stacks on one var/ folder keep theirs apart.
        state_file = Path(
            os.environ.get("CXRQ_RUNSTACK_STATE_FILE") or settings.VAR_DIR / f"runstack-{port}.json"
        )
        env["CXRQ_RUNSTACK_STATE_FILE"] = str(state_file)
        # Celery's global --quiet for the worker and the dispatcher: no banner (their log lines stay).
        env["CELERY_QUIET"] = "1"
        grace = settings.RUNSTACK_GRACE_SECONDS
        # The web lets requests in flight (long-polls wait up to CXRQ_LONG_POLL_MAX_SECONDS) end
        # within the stack's grace, not gunicorn's 30 s, which outlived it.
        web_env = {"CXRQ_WEB_GRACEFUL_TIMEOUT_SECONDS": str(max(1, int(grace) - 2))} | {
            k: v for k, v in os.environ.items() if k == "CXRQ_WEB_GRACEFUL_TIMEOUT_SECONDS"
        }
        components = [
            # The production server (backend/edge/server.py), not runserver: the same deadlines,
            # limits and error pages a deployment has. CXRQ_WEB_WORKERS processes (default: one
            # per core, at most 4).
            # Gunicorn's startup lines (INFO) stay out of the console: warnings and errors only.
            Component("web", _warnings_only(server_argv(f"{host}:{port}")), env | web_env),
            # The worker runs as its own process (`python -m worker`); the backend imports
            # nothing of it.
            Component("worker", [sys.executable, "-m", "worker"], env),
            # The dispatcher: webhook deliveries, the overdue-delivery sweep and the retention purge.
            Component("dispatcher", [sys.executable, "manage.py", "run_dispatcher"], env),
        ]
        # The DICOM receiver (C-STORE SCP), its own process as in a deployment (--dicom-port 0:
        # no receiver).
        if dicom_port:
            argv = [sys.executable, "manage.py", "run_dicom", "--address", host, "--port", str(dicom_port)]
            components.append(Component("dicom", argv, env | dicom_env))
        ready = ReadyLine(
            base=base,
            since=started,
            write=self._say,
            repeat=[line for line in key_lines if "API key" in line],
        )
        Supervisor(components, state_file=state_file, grace=grace, log=self._log, on_tick=ready.check).run()

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _log(self, line: str) -> None:
        self.stderr.write(line)
        self.stderr.flush()


def _warnings_only(argv: list[str]) -> list[str]:
    """A gunicorn command line that logs warnings and errors only (before its application argument)."""
    return [*argv[:-1], "--log-level", "warning", argv[-1]]


class ReadyLine:
    """Says once, when a worker this stack started has reported in, that the stack can score."""

    POLL_SECONDS = 1.0

    def __init__(self, *, base: str, since, write, repeat: list[str]):
        self.base, self.since, self.write, self.repeat = base, since, write, repeat
        self.said = False
        self._next = 0.0

    def check(self) -> None:
        if self.said or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.POLL_SECONDS
        try:
            if not connection.in_atomic_block:  # (a test's transaction holds it)
                close_old_connections()  # one the database dropped meanwhile is replaced
            beat = (
                WorkerHeartbeat.objects.filter(started_at__gte=self.since, last_seen_at__gte=self.since)
                .order_by("started_at")
                .first()
            )
        except Exception:  # noqa: BLE001 - the database not there yet: ask again next second
            return
        if beat is None:
            return
        self.said = True
        weights = (beat.info or {}).get("weights") or "unknown"
        self.write("\n".join([ready_line(self.base, weights), *self.repeat, ""]))


def ready_line(base: str, weights: str) -> str:
    return f"cxrq is ready: {base}/ (worker up, weights: {weights})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Component:
    """One process of the stack: started, restarted after it died (with backoff), stopped."""

    # The first restart after RUNSTACK_RESTART_DELAY_SECONDS; each next one after twice the wait.
    BACKOFF_MAX_SECONDS = 30.0
    # A process that ran this long before it died is not crash-looping: its backoff starts over.
    STABLE_SECONDS = 60.0

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.backoff = 0.0
        self.restart_at: float | None = None
        self.since = _now()
        self.last_exit: int | None = None

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.started_at, self.restart_at, self.since = time.monotonic(), None, _now()

    def died(self) -> float:
        """Note the exit and schedule the restart; returns the wait before it."""
        assert self.proc is not None
        self.last_exit = self.proc.returncode
        self.proc = None
        ran = time.monotonic() - self.started_at
        if ran >= self.STABLE_SECONDS or self.backoff == 0:
            self.backoff = settings.RUNSTACK_RESTART_DELAY_SECONDS
        else:
            self.backoff = min(self.backoff * 2, self.BACKOFF_MAX_SECONDS)
        self.restart_at = time.monotonic() + self.backoff
        self.since = _now()
        return self.backoff

    def state(self) -> dict:
        return {
            "state": "up" if self.up else "down",
            "pid": self.proc.pid if self.up and self.proc is not None else None,
            "restarts": self.restarts,
            "since": self.since,
            "last_exit": self.last_exit,
        }


class Supervisor:
    """Keeps every component running until Ctrl-C or SIGTERM, then stops them all within `grace`.

    A component that dies is restarted (with backoff and a log line) while the others go on
    serving; the state file says which is down meanwhile. On a stop each gets SIGTERM (a
    graceful stop: the worker finishes its batch in hand); whatever is still alive after
    `grace` seconds, the components and every process they started, is killed."""

    def __init__(self, components: list[Component], *, state_file: Path, grace: float, log, on_tick=None):
        self.components, self.state_file, self.grace, self.log = components, state_file, grace, log
        self.on_tick = on_tick  # called on every supervision tick (the ready line)
        self.stop = _Stop()

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for component in self.components:
                component.start()
            self.write_state()
            while not self.stop.signalled:
                if self.supervise():
                    self.write_state()
                if self.on_tick is not None:
                    self.on_tick()
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.shutdown()
            with contextlib.suppress(OSError):
                self.state_file.unlink()

    def supervise(self) -> bool:
        """Restart what died; True when a state changed."""
        changed = False
        for c in self.components:
            if c.proc is not None and c.proc.poll() is not None:
                rc = c.proc.returncode
                wait = c.died()
                self.log(f"event=component_died component={c.name} returncode={rc} restart_in_s={wait:.1f}")
                changed = True
            if c.proc is None and c.restart_at is not None and time.monotonic() >= c.restart_at:
                c.restarts += 1
                c.start()
                self.log(f"event=component_restarted component={c.name} restarts={c.restarts}")
                changed = True
        return changed

    def write_state(self) -> None:
        """Written whole and renamed into place: health never reads half a file."""
        body = {
            "pid": os.getpid(),
            "updated_at": _now(),
            "components": {c.name: c.state() for c in self.components},
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.state_file)

    def shutdown(self) -> None:
        """SIGTERM to each component, then SIGKILL to every process of the stack still alive
        after the grace: the components, and the processes they started (a worker's pool, the
        web's workers), counted before the signal, so none escapes by being orphaned."""
        started = time.monotonic()
        me = psutil.Process()
        family = me.children(recursive=True)
        for c in self.components:
            if c.up:
                assert c.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=self.grace)
        # Started after the count (a restart racing the stop, a pool replacing a child).
        alive += [p for p in me.children(recursive=True) if p not in alive]
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if alive:
            self.log(
                f"event=stack_killed after_s={self.grace:.0f} processes={len(alive)} "
                f"names={','.join(sorted({_name(p) for p in alive}))}"
            )
        psutil.wait_procs(alive, timeout=5)
        for c in self.components:
            if c.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(timeout=1)
        self.log(f"event=stack_stopped seconds={time.monotonic() - started:.1f}")


def _name(proc: psutil.Process) -> str:
    """Which program: `python -m celery` reads as celery, gunicorn's workers as gunicorn."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return "?"
    words = [a for a in argv[1:4] if not a.startswith("-")] or argv[:1]
    return Path(words[0]).name if words else "?"


class _Stop:
    """Ctrl-C or SIGTERM: stop every component, each with SIGTERM (a graceful stop)."""

    signalled = False

    def __call__(self, signum, frame) -> None:
        self.signalled = True


def _shell_path(path: str) -> str:
    """`path` relative to the working directory where it lies below it (.venv/bin/python), else as is."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path
