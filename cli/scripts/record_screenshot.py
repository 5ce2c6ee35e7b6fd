"""Record `cxrq` in a terminal as an SVG (docs/screenshots/cli.svg); not part of the package.

Each command runs for real, in a pseudo-terminal (so with its live progress bars and colours),
against the server in CXRQ_URL with the key in CXRQ_API_KEY. The bytes it wrote are replayed
through a small line-based terminal (carriage return, erase line, cursor up: what rich's live
display uses), and the screen it leaves is rendered by rich's `Console(record=True).export_svg`.

    CXRQ_URL=http://127.0.0.1:8000 CXRQ_API_KEY=... \\
        python cli/scripts/record_screenshot.py --out docs/screenshots/cli.svg -- \\
            submit scans/ --wait ";;" result @NEWEST
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import shlex
import subprocess
import sys

from rich.console import Console
from rich.text import Text

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def run_in_pty(argv: list[str], columns: int) -> str:
    """What argv wrote to a terminal `columns` wide."""
    env = dict(os.environ, COLUMNS=str(columns), LINES="50", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(main)
    return b"".join(chunks).decode("utf-8", errors="replace")


def screen(stream: str) -> str:
    """The lines a terminal shows after `stream`, colours (SGR) kept, cursor moves applied by line."""
    lines = [""]
    row = 0
    pos = 0
    while pos < len(stream):
        match = CSI.match(stream, pos)
        if match:
            params, command = match.groups()
            if command == "m":
                lines[row] += match.group(0)
            elif command == "K":  # erase the line (rich rewrites whole lines)
                lines[row] = ""
            elif command == "A":  # cursor up
                row = max(0, row - int(params or 1))
            pos = match.end()
            continue
        char = stream[pos]
        pos += 1
        if char == "\r":
            continue  # always followed by a full rewrite of the line (erase) or a newline
        if char == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
            continue
        if char == "\x1b":
            continue
        lines[row] += char
    while lines and not Text.from_ansi(lines[-1]).plain.strip():
        lines.pop()
    return "\n".join(lines)


def offline(svg: str) -> str:
    """rich's SVG names a web font on a CDN after the local one: keep the local one only, so the page
    fetches nothing (a viewer without Fira Code falls back to its monospace font)."""
    return re.sub(r',\s*url\("https?://[^"]*"\) format\("[a-z0-9]+"\)', "", svg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--columns", type=int, default=118)
    parser.add_argument("--title", default="cxrq")
    parser.add_argument(
        "commands",
        nargs="+",
        help="cxrq arguments; several commands separated by ';;'; @NEWEST: the newest job's id",
    )
    args = parser.parse_args()
    commands: list[list[str]] = [[]]
    for word in args.commands:
        if word == ";;":
            commands.append([])
        else:
            commands[-1].append(word)
    console = Console(record=True, width=args.columns, force_terminal=True, color_system="truecolor")
    for command in commands:
        if "@NEWEST" in command:  # the id of the newest job, once the commands before have run
            newest = subprocess.run(
                [sys.executable, "-m", "cxrq_cli", "list", "--limit", "1", "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
            job_id = json.loads(newest.stdout)[0]["id"]
            command = [job_id if word == "@NEWEST" else word for word in command]
        console.print(Text("$ ", style="bold green") + Text("cxrq " + shlex.join(command), style="bold"))
        console.print(
            Text.from_ansi(screen(run_in_pty([sys.executable, "-m", "cxrq_cli", *command], args.columns)))
        )
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(offline(console.export_svg(title=args.title)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
