"""What the CLI prints: rich tables for people, JSON for programs (the CSV is the server's own)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cxrq_cli.api import plural

ENDED = ("succeeded", "failed", "cancelled", "deleted")
STYLES = {
    "succeeded": "green",
    "failed": "red",
    "refused": "red",
    "cancelled": "yellow",
    "deleted": "dim",
    "queued": "cyan",
    "in_progress": "blue",
}


def stdout_console() -> Console:
    """Tables on stdout: the terminal's width, or 160 columns when piped (rich would take 80)."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, soft_wrap=False, width=160 if piped else None)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def status_text(status: str) -> Text:
    return Text(status, style=STYLES.get(status, ""))


def probabilities(job: dict | None) -> list[tuple[str, float]]:
    """The result's probabilities, highest first."""
    result = (job or {}).get("result") or {}
    probs = result.get("probabilities") or {}
    return sorted(((k, float(v)) for k, v in probs.items()), key=lambda kv: -kv[1])


def top_findings(job: dict | None, n: int = 3) -> str:
    return ", ".join(f"{label} {p:.2f}" for label, p in probabilities(job)[:n])


def is_untrained(job: dict | None) -> bool:
    return (((job or {}).get("result") or {}).get("provenance") or {}).get("weights") == "untrained"


def untrained(jobs: list[dict | None]) -> bool:
    return any(is_untrained(j) for j in jobs)


UNTRAINED_MARK = "untrained"


def findings_text(job: dict) -> Text:
    """A row's top findings, or its error, with `untrained` before them when the weights are."""
    error = job.get("error")
    if error:
        return Text(f"{error.get('code')}: {error.get('message')}")
    text = Text()
    if is_untrained(job):
        text.append(UNTRAINED_MARK, style="bold yellow")
        text.append(" ")
    text.append(top_findings(job) or "-")
    return text


def queue_text(queue: dict) -> str:
    """`3 jobs ahead, about 12 s`; `3 jobs ahead, no worker is running` when none is live (the
    API's `queue.state` `no_worker`): no number then, since none would be true."""
    ahead = queue.get("jobs_ahead")
    text = plural(ahead, "job") + " ahead" if isinstance(ahead, int) else "? jobs ahead"
    if queue.get("state") == "no_worker":
        return f"{text}, no worker is running"
    eta = queue.get("eta_seconds")
    return f"{text}, about {eta:.0f} s" if isinstance(eta, (int, float)) else text


UNTRAINED_NOTE = (
    "[yellow]Note:[/] these results come from the untrained fallback model (weights: untrained): "
    "the probabilities are not clinically meaningful."
)


def submit_table(items: list[dict]) -> Table:
    """A row per file; a reference column when any file was sent with one."""
    references = any(item.get("reference") for item in items)
    table = Table(title=None, header_style="bold", expand=False)
    table.add_column("file", overflow="fold", ratio=1)
    if references:
        table.add_column("reference", overflow="fold", max_width=24)
    table.add_column("job id", no_wrap=True, min_width=36)  # never cut: it is what the other commands take
    table.add_column("status", no_wrap=True)
    table.add_column("top findings / error", overflow="fold", ratio=2)
    for item in items:
        detail = findings_text({"error": item.get("error"), "result": item.get("result")})
        if item.get("cached") and not item.get("error"):
            detail.append(" (cached result)")
        middle = [Text(item.get("reference") or "-")] if references else []
        table.add_row(item["file"], *middle, item.get("job_id") or "-", status_text(item["status"]), detail)
    return table


def job_table(job: dict) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("id", job.get("id", ""))
    if job.get("reference"):
        table.add_row("reference", Text(job["reference"]))
    table.add_row("status", status_text(job.get("status", "")))
    for key in ("priority", "image_format", "model_version", "created_at", "started_at", "finished_at"):
        if job.get(key):
            table.add_row(key.replace("_", " "), str(job[key]))
    if job.get("attempts"):
        table.add_row("attempts", str(job["attempts"]))
    queue = job.get("queue")
    if queue and job.get("status") == "queued":
        table.add_row("queue", queue_text(queue))
    if job.get("cancel_requested_at") and job.get("status") not in ENDED:
        table.add_row("cancel", f"requested at {job['cancel_requested_at']}")
    if job.get("error"):
        table.add_row("error", f"{job['error'].get('code')}: {job['error'].get('message')}")
    findings = top_findings(job)
    if findings:
        table.add_row("top findings", findings_text(job))
    return table


def result_table(job: dict) -> Table:
    result = job.get("result") or {}
    provenance = result.get("provenance") or {}
    caption = ", ".join(
        f"{k}: {provenance[k]}" for k in ("model_version", "weights", "precision") if provenance.get(k)
    )
    title = f"job {job.get('id')}" + (f" ({job['reference']})" if job.get("reference") else "")
    table = Table(title=title, caption=caption or None, header_style="bold")
    table.add_column("pathology", no_wrap=True)
    table.add_column("probability", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for label, p in probabilities(job):
        bar = "█" * round(p * 20)
        table.add_row(label, f"{p:.4f}", Text(bar, style="red" if p >= 0.5 else "cyan"))
    return table


def list_table(jobs: list[dict], width: int = 160) -> Table:
    """Narrower than 130 columns, the priority and the creation time are left out: the ids stay whole.
    A job's reference (the client's own id for it) is its second column; `untrained` leads the findings
    of a job scored by the untrained fallback weights."""
    wide = width >= 130
    table = Table(header_style="bold")
    table.add_column("job id", no_wrap=True, min_width=36)
    table.add_column("reference", overflow="fold", max_width=24)
    table.add_column("status", no_wrap=True, min_width=11)
    if wide:
        table.add_column("priority", no_wrap=True, min_width=7)
        table.add_column("created", no_wrap=True, min_width=19)
    table.add_column("top findings / error", overflow="fold")
    for job in jobs:
        created = (job.get("created_at") or "")[:19].replace("T", " ")
        middle = [job.get("priority", "") or "", created] if wide else []
        table.add_row(
            job.get("id", ""),
            Text(job.get("reference") or "-"),
            status_text(job.get("status", "")),
            *middle,
            findings_text(job),
        )
    return table
