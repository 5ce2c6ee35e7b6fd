"""Issue 28 in `cxrq`, run as a user runs it against the live server: a reference per job (one given,
or each file's path in the folder given), `cxrq list` with the references, the untrained marker and
the `--reference` filter, `result --format csv` the API's CSV byte for byte, "no worker is running"
in a queued job's status while none is, `delete` asking first
on a terminal and refusing without one unless `--yes`, and its failures: one line for a fatal 401
or an unreachable server, on a terminal no progress bar left behind, "1 file" not "1 files"."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import httpx
import pytest

from backend.jobs.models import Job, JobStatus, WorkerHeartbeat
from tests.cli.conftest import DATA, ROOT, SAMPLES, assert_no_traceback, cli_env, cxrq_argv, on_a_terminal

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAKE_WORKER = {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "20"}


def _json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert_no_traceback(proc)
    return json.loads(proc.stdout)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_references_in_submit_list_and_the_csv(cxrq, cli_server, image_folder, start_worker):
    worker = start_worker(FAKE_WORKER)
    folder = image_folder(3)
    for sample, name in zip(SAMPLES, ("a.png", "b.jpg", "c.dcm"), strict=True):
        shutil.copy(DATA / sample, folder / "nested" / name)
    worker.wait_ready()

    # Each file's reference is its path relative to the folder given.
    body = _json(cxrq("submit", str(folder), "--reference-from", "path", "--wait", "--json"))
    expected = {"gen-000.png", "nested/gen-001.png", "nested/deeper/gen-002.png"} | {
        f"nested/{name}" for name in ("a.png", "b.jpg", "c.dcm")
    }
    assert {item["reference"] for item in body["items"]} == expected
    for item in body["items"]:
        job = _json(cxrq("status", item["job_id"], "--json"))
        assert job["reference"] == item["reference"] == item["file"][len(str(folder)) + 1 :]

    # One reference given for one file; its table row and its status show it.
    fresh = image_folder(1, name="one") / "gen-000.png"
    fresh.write_bytes(fresh.read_bytes() + b"\0")  # bytes of its own: a new job, not a cached one
    one = cxrq("submit", str(fresh), "--reference", "ACC-2026/17 #2")
    assert one.returncode == 0, one.stderr
    assert "ACC-2026/17 #2" in one.stdout
    assert "1 file: 1 " in one.stderr and "1 files" not in one.stderr  # the plural, right
    (job,) = _json(cxrq("list", "--reference", "ACC-2026/17 #2", "--json"))
    assert "ACC-2026/17 #2" in cxrq("status", job["id"]).stdout

    # The list: a reference column, `untrained` before the findings (the fake runtime's weights),
    # and the filter by reference (exact).
    listed = cxrq("list")
    assert listed.returncode == 0, listed.stderr
    for item in body["items"]:
        row = next(line for line in listed.stdout.splitlines() if item["job_id"] in line)
        assert item["reference"][:20] in row and "untrained" in row, row
    assert "untrained" in listed.stderr  # and the note saying what it means
    by_reference = _json(cxrq("list", "--reference", "nested/gen-001.png", "--json"))
    assert [job["reference"] for job in by_reference] == ["nested/gen-001.png"]
    assert _json(cxrq("list", "--reference", "nested", "--json")) == []

    # result --format csv: the API's CSV, byte for byte (the one CSV, with reference and weights).
    item = next(item for item in body["items"] if item["reference"] == "nested/gen-001.png")
    as_csv = subprocess.run(
        cxrq_argv("result", item["job_id"], "--format", "csv"),
        cwd=ROOT,
        env=cli_env(cli_server),
        capture_output=True,
        timeout=120,
    )
    assert as_csv.returncode == 0, as_csv.stderr
    api = httpx.get(
        f"{cli_server.url}/api/v1/jobs/{item['job_id']}/result.csv",
        headers={"Authorization": f"Api-Key {cli_server.key}"},
        timeout=60,
    )
    assert api.status_code == 200 and as_csv.stdout == api.content
    header, first = api.text.splitlines()[:2]
    assert (
        header == "job_id,reference,finding,probability,operating_point,scale,positive,model_version,weights"
    )
    assert first.startswith(f"{item['job_id']},nested/gen-001.png,") and first.endswith(",untrained")


def test_a_reference_the_server_would_refuse_is_a_usage_error_before_anything_is_sent(
    cxrq, cli_server, image_folder
):
    folder = image_folder(2)
    (folder / "nested" / "Doe, Jane.png").write_bytes((folder / "gen-000.png").read_bytes() + b"\0")
    for args in (
        ("--reference", " padded"),
        ("--reference", "x" * 65),
        ("--reference", "tab\there"),
        ("--reference-from", "name"),  # "Doe, Jane.png": a comma
    ):
        proc = cxrq("submit", str(folder), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert_no_traceback(proc)
        assert len(_lines(proc.stderr)) == 1 and "reference" in proc.stderr, proc.stderr
    both = cxrq("submit", str(folder), "--reference", "a", "--reference-from", "path")
    assert both.returncode == 2
    assert Job.objects.count() == 0


def test_delete_asks_on_a_terminal_and_takes_yes_in_scripts(cxrq, cli_server, image_folder):
    WorkerHeartbeat.objects.all().delete()  # an earlier test's real worker may have left a live row
    folder = image_folder(3)
    body = _json(cxrq("submit", str(folder), "--json"))  # no worker: the jobs stay queued
    first, second, third = (item["job_id"] for item in body["items"])
    # No worker runs: the job's queue says so in words, not with an estimate.
    status = cxrq("status", first)
    assert status.returncode == 0 and "no worker is running" in status.stdout, status.stdout
    assert _json(cxrq("status", first, "--json"))["queue"]["state"] == "no_worker"

    # No terminal to ask on, no --yes: refused, exit 2, in one line; the job untouched.
    script = subprocess.run(
        cxrq_argv("delete", first),
        cwd=ROOT,
        env=cli_env(cli_server),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert script.returncode == 2, script.stderr
    assert "--yes" in script.stderr and len(_lines(script.stderr)) == 1
    assert Job.objects.get(id=first).status == JobStatus.QUEUED

    # On a terminal: asked; "n" keeps it (exit 1), "y" deletes it.
    env = cli_env(cli_server)
    code, shown = on_a_terminal(cxrq_argv("delete", first), env, answer="n")
    assert code == 1 and "[y/N]" in shown and "not deleted" in shown, shown
    assert Job.objects.get(id=first).status == JobStatus.QUEUED
    code, shown = on_a_terminal(cxrq_argv("delete", first), env, answer="y")
    assert code == 0 and "deleted" in shown, shown
    assert Job.objects.get(id=first).status == JobStatus.DELETED

    # --yes: no question, terminal or not.
    assert _json(cxrq("delete", second, "--yes", "--json"))["status"] == "deleted"
    code, shown = on_a_terminal(cxrq_argv("delete", third, "-y"), env)
    assert code == 0 and "[y/N]" not in shown, shown
    assert Job.objects.get(id=third).status == JobStatus.DELETED


def test_a_refused_key_and_an_unreachable_server_are_one_line(cxrq, cli_server, image_folder):
    folder = image_folder(9)
    env = cli_env(cli_server, CXRQ_API_KEY="not-a-key")

    # A fatal 401 with uploads in flight: one line, no retry notice, no progress bar left on screen.
    code, shown = on_a_terminal(cxrq_argv("submit", str(folder)), env)
    assert code == 4, shown
    assert _lines(shown) == [_lines(shown)[0]] and "invalid_api_key" in shown, shown
    piped = cxrq("submit", str(folder), env={"CXRQ_API_KEY": "not-a-key"})
    assert piped.returncode == 4 and len(_lines(piped.stderr)) == 1, piped.stderr
    assert "retrying" not in piped.stderr
    assert Job.objects.count() == 0

    # Nothing listening: given up after a few quiet tries (at most CONNECT_BUDGET seconds of them,
    # tests/cli/test_cli_units.py), one line, exit 3; on a terminal, nothing else left on screen.
    url = f"http://127.0.0.1:{_closed_port()}"
    code, shown = on_a_terminal(cxrq_argv("submit", str(folder), "--url", url), cli_env(cli_server))
    assert code == 3, shown
    assert len(_lines(shown)) == 1 and "server unreachable" in shown and "Uploading" not in shown, shown
    for args in (("list",), ("submit", str(folder)), ("status", "x")):
        proc = cxrq(*args, "--url", url)
        assert proc.returncode == 3, proc.stderr
        assert len(_lines(proc.stderr)) == 1 and "retrying" not in proc.stderr, proc.stderr
