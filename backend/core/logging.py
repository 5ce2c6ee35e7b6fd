"""Request ids and job ids in every log line, so one upload can be followed to its result.

The code logs `event=name key=value ...` messages through the standard library. Two context
variables say which request and which job a line belongs to: the web's RequestIdMiddleware sets
the request id of the request in hand; the worker sets both, from the job's row, around the
lines it writes for one job (`log_context`). The filter copies them onto every record, and the
chosen format (LOG_FORMAT) writes them:

  text  ts=... level=... logger=... request_id=... message     (one line, human-first)
  json  {"ts", "level", "logger", "event", "request_id", "job_id", "message", <key=value pairs>}

The JSON formatter is python-json-logger's (exceptions, stack traces, `extra=` fields and
unserialisable values handled by a maintained library); what it adds here is the key=value
parsing, so `event=batch_done size=8` becomes {"event": "batch_done", "size": "8"} and the
message stays readable as it was written. Values are kept as strings, whatever they look like.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS, merge_record_extra
from pythonjsonlogger.json import JsonFormatter

NONE = "-"  # what the text format writes for "no request" / "no job"

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NONE)
job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default=NONE)


class RequestIdFilter(logging.Filter):
    """Puts the current request id and job id on every record (`-` when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.job_id = job_id_var.get()
        return True


@contextmanager
def log_context(*, request_id: str | None = None, job_id: object = None) -> Iterator[None]:
    """Lines logged inside carry this request id and job id (an empty request id: none)."""
    tokens: list[tuple[contextvars.ContextVar[str], contextvars.Token[str]]] = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id or NONE)))
    if job_id is not None:
        tokens.append((job_id_var, job_id_var.set(str(job_id))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


_OPEN = {"(": ")", "[": "]", "{": "}"}


def parse_fields(message: str) -> dict[str, str]:
    """The key=value pairs of a message, logfmt-like: a key is a word at the start or after a
    space, its value runs to the next space outside quotes and brackets (so `error=%r` of an
    exception with spaces in it stays one value). Words that are not key=value are skipped;
    a key given twice keeps its first value."""
    fields: dict[str, str] = {}
    i, n = 0, len(message)
    while i < n:
        while i < n and message[i].isspace():
            i += 1
        start = i
        while i < n and (message[i].isalnum() or message[i] == "_"):
            i += 1
        key = message[start:i]
        if key and i < n and message[i] == "=" and not key[0].isdigit():
            i += 1
            value_start, closers, quote = i, [], ""
            while i < n:
                ch = message[i]
                if quote:
                    if ch == "\\":
                        i += 1
                    elif ch == quote:
                        quote = ""
                elif ch in "'\"":
                    quote = ch
                elif ch in _OPEN:
                    closers.append(_OPEN[ch])
                elif closers and ch == closers[-1]:
                    closers.pop()
                elif ch.isspace() and not closers:
                    break
                i += 1
            fields.setdefault(key, message[value_start:i])
        else:  # not a key=value word: skip to the next space
            while i < n and not message[i].isspace():
                i += 1
    return fields


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line. Fixed fields first (ts, level, logger, event, request_id,
    job_id, message), then the message's key=value pairs, then `extra=` fields and exc_info.
    A job id or request id written in the message wins over the context's."""

    FIXED = ("ts", "level", "logger", "event", "request_id", "job_id", "message", "pid")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "reserved_attrs", [*RESERVED_ATTRS, "request_id", "job_id", "dicom_values_withheld"]
        )
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        message = record.message
        fields = parse_fields(message)
        log_data["ts"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["event"] = fields.pop("event", None)
        log_data["request_id"] = _given(fields.pop("request_id", None)) or _given(
            getattr(record, "request_id", None) or request_id_var.get()
        )
        log_data["job_id"] = _given(fields.pop("job_id", None)) or _given(
            getattr(record, "job_id", None) or job_id_var.get()
        )
        log_data["message"] = message
        log_data["pid"] = record.process
        for key, value in fields.items():
            log_data.setdefault(key, value)
        for key, value in message_dict.items():
            if key not in self.FIXED:
                log_data[key] = value
        merge_record_extra(record, log_data, reserved=self._skip_fields | set(self.FIXED))


def _given(value: str | None) -> str | None:
    return None if value in (None, "", NONE) else value


# --- DICOM values never reach a log ---------------------------------------------------------------

# Libraries that read DICOM values and quote them in what they log: highdicom's person-name check
# warns with the name itself (`The string "SMITHJOHN" is unlikely ...`), pydicom's validation and
# conversion messages quote element values, pynetdicom logs exceptions raised while encoding or
# handling a dataset (their text is pydicom's) and dumps datasets at DEBUG.
DICOM_LIBRARIES = ("pydicom", "highdicom", "pynetdicom")
_WARNING_HEAD = re.compile(r"^(?P<path>.*?):(?P<line>\d+): (?P<category>\w+): ", re.DOTALL)


class DicomValuesFilter(logging.Filter):
    """Withholds the text of what the DICOM libraries log and of every Python warning, keeping what
    an operator needs to find the cause: the logger, the level, the warning's category and the file
    and line that raised it, an exception's class.

    Warnings reach logging as `py.warnings` records (`configure` below, Django's LOGGING_CONFIG,
    and Celery's worker call `logging.captureWarnings(True)`), one formatted string that starts
    `path:line: Category: text`; the text is dropped whatever raised it: a library deep in the
    stack can quote a value that arrived in an image. pynetdicom's protocol messages at WARNING and above (association rejected,
    aborted, timeouts) carry no dataset value and are kept, unless they carry an exception.

    Installed on the handlers (it runs once for every record that is written, whichever logger it
    came from) and on the `py.warnings` logger (so a handler someone else installed, Celery's,
    gets no warning text either); a record it has rewritten passes again unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "dicom_values_withheld", False):
            return True
        if record.name == "py.warnings":
            _withhold_warning(record)
        elif record.name.split(".", 1)[0] in DICOM_LIBRARIES and not _protocol_message(record):
            _withhold(record)
        return True


def _protocol_message(record: logging.LogRecord) -> bool:
    return (
        record.name.startswith("pynetdicom")
        and record.levelno >= logging.WARNING
        and record.exc_info is None
        and isinstance(record.msg, str)
    )


def _withhold(record: logging.LogRecord) -> None:
    error = type(record.exc_info[1]).__name__ if record.exc_info and record.exc_info[1] else None
    if isinstance(record.msg, BaseException):  # LOGGER.exception(exc): the message is the exception
        error = type(record.msg).__name__
    record.msg = "event=library_log source=%s text=withheld" + (" error=%s" if error else "")
    record.args = (record.name, error) if error else (record.name,)
    _cleared(record)


def _withhold_warning(record: logging.LogRecord) -> None:
    text = record.getMessage()
    head = _WARNING_HEAD.match(text)
    if head:
        source = "/".join(head["path"].replace("\\", "/").split("/")[-2:])
        record.msg = "event=library_warning category=%s source=%s:%s text=withheld"
        record.args = (head["category"], source, head["line"])
    else:
        record.msg, record.args = "event=library_warning text=withheld", ()
    _cleared(record)


def _cleared(record: logging.LogRecord) -> None:
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    record.dicom_values_withheld = True


def configure(config: dict[str, Any]) -> None:
    """Django's LOGGING_CONFIG: the LOGGING dict, and Python's warnings routed into logging as
    `py.warnings` records. Django stopped doing the second long ago and Celery does it only in
    its workers: without it the web and the DICOM receiver print a warning, highdicom's with a
    patient's name in it, straight to stderr, where no filter sees it."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


def withhold_dicom_values(handlers: list[logging.Handler]) -> None:
    """Adds the filter to handlers a framework installed itself (Celery's worker replaces the
    root logger's handlers with its own: worker/celery_app.py calls this on them)."""
    for handler in handlers:
        if not any(isinstance(f, DicomValuesFilter) for f in handler.filters):
            handler.addFilter(DicomValuesFilter())
