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
import hmac
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


@dataclass(frozen=True)
class Found:
    """A file to send and the folder named on the command line it was found in (None: named itself)."""

    path: Path
    folder: Path | None = None

    def reference(self, source: str) -> str:
        """Its reference by `--reference-from`: `path` (relative to the folder given; a file named
        itself: its name), `name` (the file's name) or `stem` (its name without the extension)."""
        if source == "path":
            return (self.path.relative_to(self.folder) if self.folder else Path(self.path.name)).as_posix()
        if source == "stem":
            return self.path.stem
        return self.path.name


def walk(arguments: list[str]) -> list[Found]:
    """The files to send, in a stable order, each once, with the folder each was found in."""
    found: list[Found] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    candidate = Path(root) / name
                    if not name.startswith(".") and candidate.is_file() and _sniff(candidate):
                        found.append(Found(candidate, path))
        elif path.is_file():
            found.append(Found(path))
        elif path.exists():
            raise UsageError(f"{argument}: not a file or a directory")
        else:
            raise UsageError(f"{argument}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def collect(arguments: list[str]) -> list[Path]:
    """The files to send, in a stable order, each once."""
    return [item.path for item in walk(arguments)]


REFERENCE_MAX = 64
REFERENCE_PUNCTUATION = frozenset(" ._-:/#")


def reference_problem(reference: str) -> str | None:
    """Why the server would refuse this reference (`400 invalid_reference`), or None: 1 to 64
    letters, digits, spaces and `. _ - : / #`, no space at either end (docs/api.md). Checked before
    anything is sent, so a folder is refused as a whole rather than file by file; the server checks
    again and has the last word."""
    if not 1 <= len(reference) <= REFERENCE_MAX:
        return f"a reference has 1 to {REFERENCE_MAX} characters, this one {len(reference)}"
    if reference != reference.strip(" "):
        return "a reference may not start or end with a space"
    bad = sorted({c for c in reference if not (c.isalnum() or c in REFERENCE_PUNCTUATION)})
    if bad:
        return "a reference has only letters, digits, spaces and . _ - : / #, not " + " ".join(
            repr(c) for c in bad
        )
    return None


@dataclass(frozen=True)
class Upload:
    path: Path
    sha256: str

    def idempotency_key(self, priority: str | None, reference: str | None = None, secret: str = "") -> str:
        """Derived from the bytes (and the priority asked for), so a re-run of the same command sends
        the same key: the server answers with the job it made the first time, never a second one.
        The priority is part of it so that sending an image again as `stat` reaches dedup, which
        moves a waiting job up; a key alone would answer with the job as it was. So is the reference,
        when one is given, so that an image sent again with a reference reaches dedup too (which
        gives the reference to a job that had none), but as a keyed hash (HMAC with the API key as
        `secret`): the key is not secret and may be logged, the reference is never to be."""
        key = f"cxrq-cli.{priority or 'routine'}.sha256.{self.sha256}"
        if reference is not None:
            tag = hmac.new(secret.encode(), reference.encode(), hashlib.sha256).hexdigest()[:32]
            key += f".ref.{tag}"
        return key


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
