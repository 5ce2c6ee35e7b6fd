"""`cxrq` against the live server: submit a folder and wait, results in three formats, status, list,
cancel, delete, exit codes, retries after 429 with Retry-After, and an interrupted run resumed."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time

import pytest

from backend.clients.models import Client, Scope
from backend.jobs.models import Job
from tests.cli.conftest import (
    ROOT,
    SAMPLES,
    as_from_a_terminal,
    assert_no_traceback,
    cli_env,
    cxrq_argv,
    sigint,
)
from tests.factories import client_and_key, png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAKE_WORKER = {"CXRQ_MODEL_FAKE": "1", "CXRQ_FAKE_BATCH_MS": "20"}


def _json(proc: subprocess.CompletedProcess):
    assert_no_traceback(proc)
    return json.loads(proc.stdout)


def test_submit_a_folder_and_wait_then_read_the_results(cxrq, cli_server, image_folder, start_worker):
    worker = start_worker(FAKE_WORKER)
    folder = image_folder(6, samples=True)
    # Walked recursively, by content: the duplicate is one job; text, a hidden image and an empty
    # file beside the images are not sent.
    (folder / "nested" / "same-as-gen-000.png").write_bytes((folder / "gen-000.png").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / ".hidden.png").write_bytes(png_bytes(seed=999))
    worker.wait_ready()

    started = time.monotonic()
    proc = cxrq("submit", str(folder), "--wait", "--json")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    body = _json(proc)
    files = sorted(item["file"].rsplit("/", 1)[-1] for item in body["items"])
    assert files == sorted([f"gen-{i:03d}.png" for i in range(6)] + SAMPLES + ["same-as-gen-000.png"])
    assert body["ok"] is True and body["counts"] == {"succeeded": len(files)}
    for item in body["items"]:
        assert item["status"] == "succeeded" and item["error"] is None, item
        assert len(item["result"]["probabilities"]) == 18
        assert item["result"]["provenance"]["weights"] == "untrained"
    by_name = {item["file"].rsplit("/", 1)[-1]: item for item in body["items"]}
    assert by_name["same-as-gen-000.png"]["job_id"] == by_name["gen-000.png"]["job_id"]
    assert Job.objects.count() == len(files) - 1
    print(f"submit --wait of {len(files)} files: {elapsed:.1f} s")

    job_id = by_name["gen-000.png"]["job_id"]
    probabilities = by_name["gen-000.png"]["result"]["probabilities"]

    # status: a table by default, the job as JSON with --json.
    table = cxrq("status", job_id)
    assert table.returncode == 0 and job_id in table.stdout and "succeeded" in table.stdout, table.stderr
    assert _json(cxrq("status", job_id, "--json"))["status"] == "succeeded"

    # result in its three formats, the same numbers in each.
    as_json = _json(cxrq("result", job_id, "--format", "json"))
    assert as_json["id"] == job_id and as_json["result"]["probabilities"] == probabilities
    as_csv = cxrq("result", job_id, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    # The server's one CSV (tests/cli/test_cli_references_and_failures.py compares the bytes): a row
    # per finding in the model's order, the weights named.
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["finding"] for r in rows] == as_json["result"]["provenance"]["labels"]
    assert {r["job_id"] for r in rows} == {job_id} and {r["weights"] for r in rows} == {"untrained"}
    as_table = cxrq("result", job_id, "--format", "table")
    assert as_table.returncode == 0, as_table.stderr
    top = max(probabilities, key=probabilities.get)
    assert top in as_table.stdout and f"{probabilities[top]:.4f}" in as_table.stdout
    assert "untrained" in as_table.stderr  # the fallback model is said so

    # list, and its filter.
    listed = _json(cxrq("list", "--json"))
    assert {j["id"] for j in listed} == {item["job_id"] for item in body["items"]}
    assert _json(cxrq("list", "--status", "failed", "--json")) == []
    assert job_id in cxrq("list").stdout

    # The same command again: every file answered from its job, no new job, a table for people.
    again = cxrq("submit", str(folder), "--wait")
    assert again.returncode == 0, again.stderr
    assert job_id in again.stdout and "cached result" in again.stdout
    assert Job.objects.count() == len(files) - 1


def test_cancel_delete_and_the_exit_codes(cxrq, cli_server, image_folder, tmp_path):
    # No worker: what is sent stays queued. An undecodable PNG among valid ones: refused, exit 1.
    folder = image_folder(2)
    (folder / "broken.png").write_bytes(png_bytes(seed=50)[:200])
    proc = cxrq("submit", str(folder), "--json")
    assert proc.returncode == 1, proc.stderr
    body = _json(proc)
    by_name = {item["file"].rsplit("/", 1)[-1]: item for item in body["items"]}
    assert by_name["broken.png"]["status"] == "refused"
    assert by_name["broken.png"]["error"]["code"] == "invalid_image"
    assert by_name["broken.png"]["error"]["status"] == 400
    assert {by_name[f"gen-00{i}.png"]["status"] for i in range(2)} == {"queued"}
    # Without --json: the table says why, in words.
    words = cxrq("submit", str(folder / "broken.png"))
    assert words.returncode == 1 and "invalid_image" in words.stdout
    assert_no_traceback(words)

    # A queued job: cancel it (again: harmless), read its missing result, delete it, cancel it (409).
    job_id = by_name["gen-000.png"]["job_id"]
    assert _json(cxrq("cancel", job_id, "--json"))["status"] == "cancelled"
    again = cxrq("cancel", job_id)
    assert again.returncode == 0 and "cancelled" in again.stdout, again.stderr
    no_result = cxrq("result", job_id)
    assert no_result.returncode == 1 and "cancelled" in no_result.stderr
    assert _json(cxrq("list", "--status", "cancelled", "--json"))[0]["id"] == job_id
    assert _json(cxrq("delete", job_id, "--yes", "--json"))["status"] == "deleted"
    assert _json(cxrq("status", job_id, "--json"))["status"] == "deleted"
    too_late = cxrq("cancel", job_id)
    assert too_late.returncode == 1 and "job_not_cancellable" in too_late.stderr, too_late.stderr
    assert_no_traceback(too_late)
    unknown = cxrq("status", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 1 and "job_not_found" in unknown.stderr

    # 4: the key refused (unknown key; a read-only key uploading), with the code in words.
    bad_key = cxrq("list", env={"CXRQ_API_KEY": "not-a-key"})
    assert bad_key.returncode == 4 and "invalid_api_key" in bad_key.stderr, bad_key.stderr
    _, read_key = client_and_key(name="cli", scope=Scope.READ)
    read_only = cxrq("submit", str(folder), "--api-key", read_key)
    assert read_only.returncode == 4 and "insufficient_scope" in read_only.stderr, read_only.stderr
    assert "not-a-key" not in bad_key.stdout + bad_key.stderr
    assert read_key not in read_only.stdout + read_only.stderr
    assert cli_server.key not in cxrq("list").stdout

    # 3: nothing listening there (the connection retried, then given up).
    unreachable = cxrq("list", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "unreachable" in unreachable.stderr
    assert_no_traceback(unreachable)

    # 2: usage errors, before anything is sent.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for args, env in [
        (("submit", str(tmp_path / "missing.png")), None),
        (("submit", str(empty)), None),
        (("result", job_id, "--format", "xml"), None),
        (("frobnicate",), None),
        (("list",), {"CXRQ_API_KEY": ""}),
    ]:
        usage = cxrq(*args, env=env)
        assert usage.returncode == 2, (args, usage.stderr)
        assert_no_traceback(usage)


def test_retries_after_429_honouring_retry_after(cxrq, cli_server, image_folder):
    Client.objects.filter(name=cli_server.client_name).update(upload_rate="1/s")
    folder = image_folder(4)

    # No retries: three of the four are refused with the server's code.
    refused = cxrq("submit", str(folder), "--json", "--retries", "0", "--parallel", "1")
    assert refused.returncode == 1
    codes = [item["error"]["code"] for item in _json(refused)["items"] if item["error"]]
    assert codes and set(codes) == {"rate_limited"}
    accepted = len(_json(refused)["items"]) - len(codes)
    assert Job.objects.count() == accepted

    # With them: each refusal waits out the Retry-After and the run completes, no job twice.
    time.sleep(1.5)
    started = time.monotonic()
    proc = cxrq("submit", str(folder), "--json", "--parallel", "2")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "rate_limited (HTTP 429)" in proc.stderr and "retrying in 1." in proc.stderr
    assert {item["status"] for item in _json(proc)["items"]} == {"queued"}
    assert Job.objects.count() == 4
    assert elapsed >= 2.0  # four uploads at one a second, the first at once


def test_an_interrupted_run_resumes_without_duplicating_jobs(cli_server, image_folder, start_worker):
    # Slowed to 5 uploads a second (the 40 take 8 s), so that Ctrl-C surely comes mid-way even on a
    # loaded machine.
    Client.objects.filter(name=cli_server.client_name).update(upload_rate="5/s")
    worker = start_worker(FAKE_WORKER)
    n = 40
    folder = image_folder(n)
    (folder / "copy-of-gen-001.png").write_bytes((folder / "nested" / "gen-001.png").read_bytes())
    worker.wait_ready()
    argv = cxrq_argv("submit", str(folder), "--wait", "--json", "--parallel", "3")
    env = cli_env(cli_server)

    first = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    deadline = time.monotonic() + 60
    while Job.objects.count() < 5:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    sigint(first)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    made = Job.objects.count()
    assert 5 <= made < n

    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    body = json.loads(second.stdout)
    assert len(body["items"]) == n + 1
    assert all(item["status"] == "succeeded" and item["result"]["probabilities"] for item in body["items"])
    assert len({item["job_id"] for item in body["items"]}) == n
    assert Job.objects.count() == n  # one job per distinct image: none made twice
    # The jobs made before Ctrl-C are the ones the second run reported, not new ones.
    first_ids = set(Job.objects.order_by("created_at").values_list("id", flat=True)[:made])
    assert {str(i) for i in first_ids} <= {item["job_id"] for item in body["items"]}
