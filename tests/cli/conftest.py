"""The command-line client (cli/) run as a user runs it: `python -m cxrq_cli`, a process of its own,
against the real web server (backend/edge/server.py, as tests/contract starts it) on the test
database, its jobs finished by a real worker on the fake runtime where a test needs results."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import DATA, ROOT, client_and_key, png_bytes

CLI_ROOT = ROOT / "cli"
# The package's own modules, for the tests that call them directly (the processes get PYTHONPATH).
if str(CLI_ROOT) not in sys.path:
    sys.path.insert(0, str(CLI_ROOT))

# No default rate or per-client queue cap (a test that wants a rate sets the client's own); the
# long-poll limited to 5 s, below the CLI's 30 s, so the CLI must adapt to the server's limit.
SERVER_ENV = {
    "DJANGO_DEBUG": "false",
    "CXRQ_UPLOAD_RATE": "0",
    "CXRQ_READ_RATE": "0",
    "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
    "CXRQ_LONG_POLL_MAX_SECONDS": "5",
}
FAKE_WORKER = {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "20"}
# The sample images the server accepts (PNG, JPEG and a DICOM with its preamble).
SAMPLES = ["00000001_000.png", "16747_3_1.jpg", "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    key: str
    client_name: str


@pytest.fixture
def cli_server(start_web) -> Server:
    """gunicorn + uvicorn workers on a free loopback port (tests/conftest.py), with a submit key of a
    client of its own."""
    _, key = client_and_key(name="cli")
    web = start_web(SERVER_ENV)
    web.wait_ready()
    return Server(url=web.url, proc=web.proc, log=web.log_path, key=key, client_name="cli")


def cli_env(server: Server | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `cxrq` process: this checkout's package first on the path, the server's
    URL and key in CXRQ_URL / CXRQ_API_KEY, a wide terminal so tables do not wrap."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXRQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(CLI_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["COLUMNS"] = "200"
    env["PYTHONUNBUFFERED"] = "1"
    if server is not None:
        env["CXRQ_URL"] = server.url
        env["CXRQ_API_KEY"] = server.key
    env.update(extra)
    return env


def cxrq_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cxrq_cli", *args]


@pytest.fixture
def cxrq(cli_server) -> Callable[..., subprocess.CompletedProcess]:
    """Run `cxrq ARGS` to its end against the live server (env: more or other variables)."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            cxrq_argv(*args),
            cwd=ROOT,
            env=cli_env(cli_server, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


@pytest.fixture
def image_folder(tmp_path) -> Callable[..., Path]:
    """A folder of images: generated PNGs (distinct bytes) and, optionally, the sample files."""

    def make(n: int, samples: bool = False, name: str = "images") -> Path:
        root = tmp_path / name
        (root / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            where = root if i % 3 == 0 else root / "nested" if i % 3 == 1 else root / "nested" / "deeper"
            (where / f"gen-{i:03d}.png").write_bytes(png_bytes(seed=i))
        if samples:
            for sample in SAMPLES:
                shutil.copy(DATA / sample, root / "nested" / sample)
        return root

    return make


def sigint(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)


def as_from_a_terminal() -> None:
    """Popen's preexec_fn for a child that is to get Ctrl-C: SIGINT back to its default. A test run
    started as a background job of a non-interactive shell (a CI runner, `make test &`) inherits
    SIGINT ignored, its children too, and Python installs no KeyboardInterrupt handler for a signal
    ignored at its start: the CLI would run to its end and exit 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def on_a_terminal(
    argv: list[str], env: dict[str, str], answer: str | None = None, columns: int = 120, timeout: float = 120
) -> tuple[int, str]:
    """Run argv with a pseudo-terminal for stdin, stdout and stderr (so rich draws its live progress
    bars and `cxrq delete` may ask); `answer` is typed once the process has written its question (a
    line ending in `[y/N] `). Returns its exit code and the screen it leaves, as plain text, through
    the small terminal of cli/scripts/record_screenshot.py (carriage return, erase line, cursor up)."""
    import os
    import pty
    import select
    import time

    from rich.text import Text

    scripts = str(CLI_ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    from record_screenshot import screen

    env = dict(env, COLUMNS=str(columns), LINES="50", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True
    )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            chunks.append(data)
            if answer is not None and b"[y/N] " in b"".join(chunks):
                os.write(main, answer.encode() + b"\r")
                answer = None
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    raw = b"".join(chunks).decode("utf-8", errors="replace")
    return proc.returncode, Text.from_ansi(screen(raw)).plain
