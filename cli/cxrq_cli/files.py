"""Which files `cxrq submit` sends, and the Idempotency-Key of each.

A file named on the command line is always sent: the server judges it (a refusal is reported
with its code). A directory is walked recursively, hidden files and folders skipped, and only
the files whose first bytes are those of a PNG, a JPEG or a DICOM file (the `DICM` preamble at
offset 128) are taken: what the server itself accepts, recognised the way it recognises them,
by content and never by name. So a `.DS_Store`, a README or a scan without a preamble beside the
images is left out rather than refused.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff"
DICOM_OFFSET, DICOM = 128, b"DICM"
_HEAD = DICOM_OFFSET + len(DICOM)


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit code 2)."""


def looks_like_image(head: bytes) -> bool:
    return head.startswith(PNG) or head.startswith(JPEG) or head[DICOM_OFFSET:_HEAD] == DICOM


def _sniff(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return looks_like_image(f.read(_HEAD))
    except OSError:
        return False


def collect(arguments: list[str]) -> list[Path]:
    """The files to send, in a stable order, each once."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    candidate = Path(root) / name
                    if not name.startswith(".") and candidate.is_file() and _sniff(candidate):
                        found.append(candidate)
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise UsageError(f"{argument}: not a file or a directory")
        else:
            raise UsageError(f"{argument}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


@dataclass(frozen=True)
class Upload:
    path: Path
    sha256: str

    def idempotency_key(self, priority: str | None) -> str:
        """Derived from the bytes (and the priority asked for), so a re-run of the same command sends
        the same key: the server answers with the job it made the first time, never a second one.
        The priority is part of it so that sending an image again as `stat` reaches dedup, which
        moves a waiting job up; a key alone would answer with the job as it was."""
        return f"cxrq-cli.{priority or 'routine'}.sha256.{self.sha256}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
