"""How long `cxrq` takes to give up on a server that is not there, and what it prints meanwhile.

Runs the real CLI (this checkout's cli/, as `python -m cxrq_cli`) against a loopback port nothing
listens on: `list`, and `submit` of a folder of generated PNGs (4 uploads in flight). Prints, per
command, the wall time of each run (min / median / max), the exit code and how many lines it wrote
to stderr, with the CPU and the load average (the figures depend on them). The target (issue 28):
about 3 s at most of connection retries (`CONNECT_BUDGET` in cli/cxrq_cli/api.py), one line, exit 3.

    .venv/bin/python -m tools.cli_failure_time --runs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(seed: int) -> bytes:
    """A tiny valid PNG (8x8 grey, one pixel from the seed), without Pillow."""
    import struct
    import zlib

    rows = b"".join(b"\0" + bytes((seed + x + y) % 256 for x in range(8)) for y in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=9)
    parser.add_argument(
        "--cli", default=str(ROOT / "cli"), help="the cli/ folder to run (default: this checkout's)"
    )
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXRQ_")}
    env["PYTHONPATH"] = args.cli
    env["CXRQ_API_KEY"] = "not-used"
    url = f"http://127.0.0.1:{closed_port()}"
    print(f"cli: {args.cli}")
    print(
        f"cpu: {cpu_model()}, {os.cpu_count()} cores; loadavg at start: {Path('/proc/loadavg').read_text().strip()}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.files):
            Path(folder, f"img-{i}.png").write_bytes(png(i))
        for name, command in (("list", ["list"]), (f"submit ({args.files} files)", ["submit", folder])):
            times, codes, lines = [], set(), set()
            for _ in range(args.runs):
                started = time.monotonic()
                proc = subprocess.run(
                    [sys.executable, "-m", "cxrq_cli", *command, "--url", url],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                times.append(time.monotonic() - started)
                codes.add(proc.returncode)
                lines.add(len([line for line in proc.stderr.splitlines() if line.strip()]))
            print(
                f"{name:20s} s min/median/max {min(times):.2f} / {statistics.median(times):.2f} / "
                f"{max(times):.2f}  exit {sorted(codes)}  stderr lines {sorted(lines)}"
            )
    print(f"loadavg at end: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
