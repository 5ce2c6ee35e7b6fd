"""`cxrq`: submit chest X-rays to a cxrq server, wait for them, read, cancel, list and delete jobs.

Exit codes (docs/cli.md): 0 everything asked for succeeded; 1 something failed (an upload refused,
a job failed or was cancelled, an error answered by the server); 2 a usage error; 3 the server
could not be reached; 4 the key was refused (401/403); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cxrq_cli import __version__, output
from cxrq_cli.api import Api, ApiError, Interrupted, Unreachable, plural
from cxrq_cli.files import Found, Upload, UsageError, reference_problem, sha256_of, walk

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_URL = "http://127.0.0.1:8000"
ENDED = ("succeeded", "failed", "cancelled", "deleted")
LONG_POLL_SECONDS = 30
STATUSES = ("queued", "in_progress", "succeeded", "failed", "cancelled", "deleted")


# --- the command line -------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options every command takes, before or after its name (`cxrq --url U list` = `cxrq list --url U`)."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=default(None), help=f"server (env CXRQ_URL; default {DEFAULT_URL})")
    group.add_argument("--api-key", default=default(None), help="API key (env CXRQ_API_KEY); never printed")
    group.add_argument(
        "--retries",
        type=int,
        default=default(8),
        help="times a request refused with 429/503 is retried, after Retry-After (default 8)",
    )
    group.add_argument(
        "--timeout", type=float, default=default(60.0), help="seconds to wait for an answer (default 60)"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress bar or retry notices"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrq",
        description="Command-line client of the cxrq chest X-ray inference API.",
        epilog="exit codes: 0 all succeeded, 1 some failed, 2 usage error, 3 server unreachable, "
        "4 key refused, 130 interrupted. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"cxrq-cli {__version__}")
    _common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub, suppress=True)
        return sub

    submit = command("submit", "upload images (files, or folders walked recursively)")
    submit.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    submit.add_argument("--wait", action="store_true", help="wait until every job has ended (long-poll)")
    submit.add_argument(
        "--wait-timeout",
        type=float,
        default=0,
        metavar="SECONDS",
        help="with --wait: stop waiting after this long (default 0: until they end)",
    )
    submit.add_argument("--priority", choices=("stat", "routine"), default=None, help="default: routine")
    naming = submit.add_mutually_exclusive_group()
    naming.add_argument(
        "--reference",
        metavar="REF",
        default=None,
        help="your own id for the job(s) (accession, order or correlation id): 1-64 letters, digits, "
        "spaces and . _ - : / #; never a patient's name",
    )
    naming.add_argument(
        "--reference-from",
        choices=("path", "name", "stem"),
        default=None,
        help="each file's reference from its path relative to the folder given (a file named "
        "itself: its name), its name, or its name without the extension",
    )
    submit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    submit.add_argument(
        "--parallel",
        type=int,
        default=4,
        metavar="N",
        help="uploads (and waits) in flight at once (default 4)",
    )
    submit.set_defaults(handler=cmd_submit)

    status = command("status", "show one job")
    status.add_argument("job_id", metavar="ID")
    status.add_argument("--wait", action="store_true", help="wait until the job has ended (long-poll)")
    status.add_argument("--json", action="store_true", help="print the job as JSON")
    status.set_defaults(handler=cmd_status)

    result = command("result", "print a succeeded job's probabilities")
    result.add_argument("job_id", metavar="ID")
    result.add_argument("--format", choices=("table", "json", "csv"), default="table")
    result.add_argument("--wait", action="store_true", help="wait until the job has ended (long-poll)")
    result.set_defaults(handler=cmd_result)

    cancel = command("cancel", "cancel a queued or running job")
    cancel.add_argument("job_id", metavar="ID")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(handler=cmd_cancel)

    delete = command("delete", "delete a job's image and result now (it becomes a tombstone)")
    delete.add_argument("job_id", metavar="ID")
    delete.add_argument(
        "-y", "--yes", action="store_true", help="do not ask (needed where stdin is not a terminal)"
    )
    delete.add_argument("--json", action="store_true")
    delete.set_defaults(handler=cmd_delete)

    listing = command("list", "list your jobs, newest first")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--reference", metavar="REF", default=None, help="only the jobs with this reference")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    return parser


@dataclass
class Context:
    api: Api
    out: Console
    err: Console
    quiet: bool
    stop: threading.Event
    secret: str = ""
    progress_note: str = ""
    state: dict[str, Any] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here
    err = output.stderr_console()
    url = args.url or os.environ.get("CXRQ_URL") or DEFAULT_URL
    key = args.api_key or os.environ.get("CXRQ_API_KEY") or ""
    if not key:
        err.print("[red]error:[/] no API key: pass --api-key or set CXRQ_API_KEY")
        return EXIT_USAGE
    if args.retries < 0 or args.timeout <= 0 or getattr(args, "parallel", 1) < 1:
        err.print("[red]error:[/] --retries must be 0 or more, --timeout and --parallel more than 0")
        return EXIT_USAGE
    stop = threading.Event()

    def on_retry(why: str, delay: float) -> None:
        if not args.quiet and not stop.is_set():
            err.print(f"[dim]retrying in {delay:.1f} s: {why}[/]")

    api = Api(url, key, timeout=args.timeout, retries=args.retries, on_retry=on_retry, stop=stop)
    ctx = Context(api=api, out=output.stdout_console(), err=err, quiet=args.quiet, stop=stop, secret=key)
    # A fatal error is one line: `stop` is set first, so that no thread still sending (a parallel
    # upload, a long-poll) notes a retry under it.
    try:
        return args.handler(args, ctx)
    except UsageError as exc:
        stop.set()
        err.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE
    except Unreachable as exc:
        stop.set()
        err.print(f"[red]error:[/] server unreachable: {exc}")
        return EXIT_UNREACHABLE
    except ApiError as exc:
        stop.set()
        err.print(f"[red]error:[/] {exc.code}: {exc.message} (HTTP {exc.status})")
        return EXIT_AUTH if exc.auth_refused else EXIT_FAILED
    except (KeyboardInterrupt, Interrupted):
        stop.set()
        done = ctx.state.get("uploaded")
        where = f" after {done} of {plural(ctx.state['total'], 'upload')}" if done is not None else ""
        err.print(
            f"[yellow]interrupted{where}[/]: running the same command again resumes; "
            "nothing already sent is sent twice (each file's Idempotency-Key is its SHA-256)."
        )
        sys.stdout.flush()
        sys.stderr.flush()
        # Threads may be in a long-poll: leave without waiting for them.
        os._exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug, not an answer: still words, not a traceback (CXRQ_DEBUG=1 shows it)
        if os.environ.get("CXRQ_DEBUG"):
            raise
        err.print(f"[red]error:[/] unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    finally:
        api.close()


# --- submit -----------------------------------------------------------------------------------


@dataclass
class Item:
    """One file of the command line and what became of it."""

    path: Path
    reference: str | None = None
    sha256: str = ""
    job: dict | None = None
    error: ApiError | None = None
    cached: bool = False
    deduplicated: bool = False

    @property
    def status(self) -> str:
        if self.error is not None:
            return "refused" if self.job is None else "error"
        return (self.job or {}).get("status", "pending")

    def as_dict(self) -> dict[str, Any]:
        job = self.job or {}
        return {
            "file": str(self.path),
            # The job's own (a job found again by dedup keeps the one it had), else the one sent.
            "reference": job.get("reference", self.reference) if self.job else self.reference,
            "sha256": self.sha256,
            "job_id": job.get("id"),
            "status": self.status,
            "deduplicated": self.deduplicated,
            "cached": self.cached,
            "url": job.get("url"),
            "error": self.error.as_dict() if self.error else job.get("error"),
            "result": job.get("result"),
        }


def _progress(ctx: Context, show: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=ctx.err,
        disable=not show or ctx.quiet or not ctx.err.is_terminal,
        transient=True,  # gone when it stops, on success or failure: no "Uploading 0/9" left behind
    )


def _run_all(ctx: Context, pool: ThreadPoolExecutor, fn, tasks: list, on_done) -> None:
    """Run fn over tasks on the pool; on_done(task, future) in the main thread as each ends. The first
    error that concerns the whole run (Unreachable, a refused key) stops the rest and is raised."""
    pending: dict[Future, Any] = {pool.submit(fn, task): task for task in tasks}
    while pending:
        done, _ = wait(list(pending), timeout=0.2, return_when=FIRST_EXCEPTION)
        for future in done:
            task = pending.pop(future)
            exc = future.exception()
            if exc is not None and not (isinstance(exc, ApiError) and not exc.auth_refused):
                ctx.stop.set()
                for other in pending:
                    other.cancel()
                raise exc
            on_done(task, future)


def _reference(args, found: Found) -> str | None:
    reference = args.reference
    if args.reference_from:
        reference = found.reference(args.reference_from)
    if reference is not None:
        problem = reference_problem(reference)
        if problem:
            where = f"{found.path}: " if args.reference_from else ""
            raise UsageError(f"{where}--reference {reference!r}: {problem}")
    return reference


def cmd_submit(args, ctx: Context) -> int:
    found = walk(args.paths)
    if not found:
        raise UsageError("no PNG, JPEG or DICOM files found in " + ", ".join(args.paths))
    # Every reference is checked before anything is sent.
    items = [Item(path=f.path, reference=_reference(args, f)) for f in found]
    show = len(items) > 1 or args.wait
    ctx.state.update(total=len(items), uploaded=0)
    # Not a `with` block: its exit would wait for the threads, and one may be in a 30 s long-poll
    # when Ctrl-C comes.
    pool = ThreadPoolExecutor(max_workers=args.parallel)
    try:
        with _progress(ctx, show) as progress:
            _submit(args, ctx, pool, progress, items)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return _report_submit(args, ctx, items)


def _submit(args, ctx: Context, pool: ThreadPoolExecutor, progress: Progress, items: list[Item]) -> None:
    # The same bytes under two names (and the same reference) are sent once: one job answers both.
    by_sha: dict[tuple[str, str | None], list[Item]] = {}
    reading = progress.add_task("Reading", total=len(items))
    for item in items:
        try:
            item.sha256 = sha256_of(item.path)
        except OSError as exc:
            raise UsageError(f"{item.path}: {exc.strerror or exc}") from None
        by_sha.setdefault((item.sha256, item.reference), []).append(item)
        progress.advance(reading)
    progress.remove_task(reading)

    uploading = progress.add_task("Uploading", total=len(by_sha))

    def upload(group: list[Item]) -> dict:
        first = group[0]
        try:
            data = first.path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{first.path}: {exc.strerror or exc}") from None
        # The key from the bytes sent, should the file have changed since it was read.
        upload = Upload(path=first.path, sha256=hashlib.sha256(data).hexdigest())
        return ctx.api.upload(
            first.path.name,
            data,
            idempotency_key=upload.idempotency_key(args.priority, first.reference, ctx.secret),
            priority=args.priority,
            reference=first.reference,
        )

    def uploaded(group: list[Item], future: Future) -> None:
        exc = future.exception()
        for item in group:
            if isinstance(exc, ApiError):
                item.error = exc
            elif exc is not None:
                raise exc
            else:
                job = future.result()
                item.job = job
                item.deduplicated = bool(job.get("deduplicated"))
                item.cached = item.deduplicated and job.get("status") == "succeeded"
        ctx.state["uploaded"] += len(group)
        progress.advance(uploading)

    _run_all(ctx, pool, upload, list(by_sha.values()), uploaded)

    if args.wait:
        jobs = {item.job["id"]: item.job for item in items if item.job}
        waiting = progress.add_task("Waiting", total=len(jobs))
        progress.advance(waiting, sum(1 for job in jobs.values() if job.get("status") in ENDED))
        deadline = time.monotonic() + args.wait_timeout if args.wait_timeout > 0 else None
        waiter = Waiter(ctx.api, deadline, on_update=_no_worker_note(progress, waiting, "Waiting"))

        def ended(job_id: str, future: Future) -> None:
            exc = future.exception()
            if isinstance(exc, ApiError):
                for item in items:
                    if item.job and item.job["id"] == job_id:
                        item.error = exc
            elif exc is not None:
                raise exc
            else:
                jobs[job_id] = future.result()
                if jobs[job_id].get("status") in ENDED:
                    progress.advance(waiting)

        pending = [job_id for job_id, job in jobs.items() if job.get("status") not in ENDED]
        _run_all(ctx, pool, waiter.wait, pending, ended)
        for item in items:
            if item.job and item.error is None:
                item.job = jobs[item.job["id"]]


def _report_submit(args, ctx: Context, items: list[Item]) -> int:
    wanted = ("succeeded",) if args.wait else ("queued", "in_progress", "succeeded")
    ok = all(item.status in wanted for item in items)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    if args.json:
        output.print_json({"items": [item.as_dict() for item in items], "counts": counts, "ok": ok})
    else:
        ctx.out.print(output.submit_table([item.as_dict() for item in items]))
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        ctx.err.print(f"{plural(len(items), 'file')}: {summary}")
        if output.untrained([item.job for item in items]):
            ctx.err.print(output.UNTRAINED_NOTE)
    return EXIT_OK if ok else EXIT_FAILED


class Waiter:
    """Long-polls one job until it ends: `GET /jobs/{id}?wait=30`, asked again after each answer
    that finds it still running. A server whose limit is lower (`400 invalid_wait`) is asked with its
    own `details.max_seconds`; a server that answers at once (no long-poll behind it) is asked at
    most once a second."""

    def __init__(self, api: Api, deadline: float | None = None, on_update=None) -> None:
        self.api = api
        self.deadline = deadline
        self.seconds = LONG_POLL_SECONDS
        self.on_update = on_update or (lambda _job: None)

    def wait(self, job_id: str) -> dict:
        while True:
            seconds = self.seconds
            if self.deadline is not None:
                seconds = int(min(seconds, max(self.deadline - time.monotonic(), 0)))
            started = time.monotonic()
            try:
                job = self.api.job(job_id, wait=seconds)
            except ApiError as exc:
                limit = exc.details.get("max_seconds")
                if exc.code == "invalid_wait" and isinstance(limit, int) and 0 < limit < seconds:
                    self.seconds = min(self.seconds, limit)  # threads share this Waiter
                    continue
                raise
            self.on_update(job)
            if job.get("status") in ENDED or (
                self.deadline is not None and time.monotonic() >= self.deadline
            ):
                return job
            if time.monotonic() - started < 1.0:
                self.api._sleep(1.0)


# --- one job ----------------------------------------------------------------------------------


def _no_worker_note(progress: Progress, task, description: str):
    """A Waiter's on_update: while a job waits with no worker running (the API's `queue.state`
    `no_worker`), the progress line says so instead of only counting."""

    def update(job: dict) -> None:
        no_worker = (job.get("queue") or {}).get("state") == "no_worker" and job.get("status") == "queued"
        progress.update(
            task, description=f"{description} (no worker is running)" if no_worker else description
        )

    return update


def _read(args, ctx: Context) -> dict:
    if not getattr(args, "wait", False):
        return ctx.api.job(args.job_id)
    with _progress(ctx, True) as progress:
        description = f"Waiting for {args.job_id}"
        task = progress.add_task(description, total=None)
        return Waiter(ctx.api, on_update=_no_worker_note(progress, task, description)).wait(args.job_id)


def cmd_status(args, ctx: Context) -> int:
    job = _read(args, ctx)
    if args.json:
        output.print_json(job)
    else:
        ctx.out.print(output.job_table(job))
    return EXIT_OK


def cmd_result(args, ctx: Context) -> int:
    job = _read(args, ctx)
    if job.get("status") != "succeeded" or not job.get("result"):
        error = job.get("error") or {}
        why = f": {error.get('code')}: {error.get('message')}" if error else ""
        ctx.err.print(f"[red]error:[/] job {job.get('id')} is {job.get('status')}, it has no result{why}")
        return EXIT_FAILED
    if args.format == "json":
        output.print_json({"id": job["id"], "status": job["status"], "result": job["result"]})
    elif args.format == "csv":
        # The server's CSV, byte for byte: the same columns as the web client's download.
        sys.stdout.buffer.write(ctx.api.result_csv(job["id"]))
        sys.stdout.flush()
        if output.untrained([job]):
            ctx.err.print(output.UNTRAINED_NOTE)
    else:
        ctx.out.print(output.result_table(job))
        if output.untrained([job]):
            ctx.err.print(output.UNTRAINED_NOTE)
    return EXIT_OK


def cmd_cancel(args, ctx: Context) -> int:
    job = ctx.api.cancel(args.job_id)
    if args.json:
        output.print_json(job)
    else:
        ctx.out.print(output.job_table(job))
    return EXIT_OK


def confirm(ctx: Context, question: str) -> bool:
    """Ask on the terminal; True only for y/yes. Off a terminal (a script, a pipe), never asks."""
    ctx.err.print(f"{question} [y/N] ", end="", markup=False)
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def cmd_delete(args, ctx: Context) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "delete removes the job's image and result for good: pass --yes to delete without "
                "a terminal to confirm on"
            )
        job = ctx.api.job(args.job_id)  # an unknown id is said before asking
        name = job.get("id", args.job_id) + (f" ({job['reference']})" if job.get("reference") else "")
        if not confirm(ctx, f"Delete job {name}, {job.get('status')}? Its image and result go for good."):
            ctx.err.print("not deleted")
            return EXIT_FAILED
    job = ctx.api.delete(args.job_id)
    if args.json:
        output.print_json(job)
    else:
        ctx.out.print(output.job_table(job))
    return EXIT_OK


def cmd_list(args, ctx: Context) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be 1 or more")
    jobs = ctx.api.jobs(status=args.status, reference=args.reference, limit=args.limit)
    if args.json:
        output.print_json(jobs)
    else:
        ctx.out.print(output.list_table(jobs, width=ctx.out.width))
        if output.untrained(jobs):
            ctx.err.print(output.UNTRAINED_NOTE)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
