"""The CLI's parts on their own: which files a walk takes, the retry policy (with httpx's mock
transport, the delays recorded instead of slept), and the package as `pip install` sees it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import CLI_ROOT, cli_env
from tests.factories import ROOT, png_bytes, sample_bytes

# isort: split
# From cli/, which tests/cli/conftest.py puts on the path.
from cxrq_cli import __version__, output
from cxrq_cli.api import CONNECT_BUDGET, Api, ApiError, Interrupted, Unreachable, normalise_url, plural
from cxrq_cli.files import Found, Upload, UsageError, collect, reference_problem, walk


def test_a_walk_takes_images_by_content_and_named_files_as_they_are(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "scan").write_bytes(png_bytes(seed=1))  # no extension: still a PNG
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(sample_bytes("16747_3_1.jpg"))
    (tmp_path / "a" / "b" / "y.dcm").write_bytes(sample_bytes("Fake_MONOHR1.dcm"))
    (tmp_path / "a" / "fake.png").write_text("text named .png")
    (tmp_path / "a" / ".hidden.png").write_bytes(png_bytes(seed=2))
    (tmp_path / "a" / ".git").mkdir()
    (tmp_path / "a" / ".git" / "z.png").write_bytes(png_bytes(seed=3))
    (tmp_path / "named.txt").write_text("sent because it was named")

    found = collect([str(tmp_path / "a"), str(tmp_path / "named.txt"), str(tmp_path / "a" / "scan")])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/scan",
        "a/b/x.jpg",
        "a/b/y.dcm",
        "named.txt",
    ]
    with pytest.raises(UsageError, match="no such file"):
        collect([str(tmp_path / "missing")])


def test_the_idempotency_key_is_the_bytes_and_the_priority():
    upload = Upload(path=Path("x.png"), sha256="ab" * 32)
    assert (
        upload.idempotency_key(None)
        == upload.idempotency_key("routine")
        == f"cxrq-cli.routine.sha256.{'ab' * 32}"
    )
    assert upload.idempotency_key("stat") != upload.idempotency_key("routine")
    assert len(upload.idempotency_key("routine")) <= 255


def _api(handler, **kwargs) -> tuple[Api, list[float]]:
    """An Api over a mock transport whose sleeps are recorded, not slept."""
    slept: list[float] = []

    class Recorder(threading.Event):
        def wait(self, timeout=None):
            slept.append(timeout)
            return False

    api = Api(
        "http://cxrq.test/api/v1/", "k", transport=httpx.MockTransport(handler), stop=Recorder(), **kwargs
    )
    return api, slept


def _error(status: int, code: str, headers: dict | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} in words", "details": {}}}
    return httpx.Response(status, json=body, headers=headers or {})


def test_429_and_503_wait_for_retry_after_then_succeed_with_the_same_request():
    seen = []
    answers = iter(
        [
            _error(429, "rate_limited", {"Retry-After": "3"}),
            _error(503, "queue_full", {"Retry-After": "7"}),
            _error(409, "idempotency_key_busy", {"Retry-After": "1"}),
            httpx.Response(202, json={"id": "j1", "status": "queued"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["Idempotency-Key"], request.headers["Authorization"]))
        return next(answers)

    api, slept = _api(handler)
    assert api.upload("x.png", b"bytes", idempotency_key="key-1", priority="stat")["id"] == "j1"
    assert seen == [("/api/v1/jobs", "key-1", "Api-Key k")] * 4
    assert [round(s) for s in slept] == [3, 7, 1]
    assert all(s - int(s) <= 0.25 for s in slept)  # Retry-After, plus a little jitter, never less


def test_without_retry_after_the_backoff_grows_and_the_retries_end():
    api, slept = _api(lambda request: _error(503, "database_unavailable"), retries=4)
    with pytest.raises(ApiError) as caught:
        api.job("j1")
    assert caught.value.code == "database_unavailable" and caught.value.status == 503
    assert len(slept) == 4 and slept == sorted(slept) and slept[0] <= 0.5 and slept[-1] >= 2


def test_other_errors_are_not_retried_and_keep_the_servers_words():
    api, slept = _api(lambda request: _error(409, "job_not_cancellable"))
    with pytest.raises(ApiError, match="job_not_cancellable: job_not_cancellable in words"):
        api.cancel("j1")
    assert slept == []
    api, _ = _api(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ApiError) as caught:
        api.jobs()
    assert (caught.value.code, caught.value.message) == ("http_502", "Bad Gateway")


def test_a_connection_that_fails_is_retried_then_reported_unreachable():
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    api, slept = _api(handler, connect_retries=2)
    with pytest.raises(Unreachable, match="connection refused"):
        api.job("j1")
    assert len(calls) == 3 and len(slept) == 2


def test_a_server_that_is_down_is_given_up_within_the_budget_quietly():
    calls, notes = [], []

    def handler(request):
        calls.append(1)
        raise httpx.ConnectError("refused", request=request)

    # However many retries are allowed, the waits between tries stay within CONNECT_BUDGET seconds,
    # and none is noted: the only line is the error the caller prints.
    api, slept = _api(handler, connect_retries=50, on_retry=lambda why, delay: notes.append(why))
    with pytest.raises(Unreachable, match=r"connection refused or host not found \(\d+ tries in"):
        api.jobs()
    assert sum(slept) <= CONNECT_BUDGET and len(calls) == len(slept) + 1 >= 2
    assert notes == []


def test_a_connection_broken_mid_answer_is_noted_but_not_once_the_run_is_stopped():
    notes = []

    def handler(request):
        raise httpx.ReadError("reset", request=request)

    api, slept = _api(handler, connect_retries=2, on_retry=lambda why, delay: notes.append(why))
    with pytest.raises(Unreachable, match="ReadError"):
        api.job("j1")
    assert len(notes) == 2 and len(slept) == 2

    # A fatal error elsewhere (a 401 in another upload) set `stop` and closed the client under this
    # request: it ends, without a retry or a word.
    notes.clear()
    stop = threading.Event()

    def closed_under_it(request):
        stop.set()
        raise httpx.ReadError("client closed", request=request)

    api = Api(
        "http://cxrq.test",
        "k",
        transport=httpx.MockTransport(closed_under_it),
        stop=stop,
        on_retry=lambda why, delay: notes.append(why),
    )
    with pytest.raises(Interrupted):
        api.job("j1")
    assert notes == []


def test_references_from_the_files_and_their_check():
    root = Path("scans")
    items = [
        Found(root / "p1" / "ACC 1.dcm", root),
        Found(Path("/tmp/x/ACC-2.png")),
    ]
    assert [f.reference("path") for f in items] == ["p1/ACC 1.dcm", "ACC-2.png"]
    assert [f.reference("name") for f in items] == ["ACC 1.dcm", "ACC-2.png"]
    assert [f.reference("stem") for f in items] == ["ACC 1", "ACC-2"]
    for good in ("A", "ACC-2026/17 #2", "a.b_c-d:e/f#g", "Ünïcode 12", "x" * 64):
        assert reference_problem(good) is None, good
    for bad in ("", "x" * 65, " lead", "trail ", "tab\there", "Doe, Jane", "a\nb", "semi;colon"):
        assert reference_problem(bad), bad


def test_a_walk_keeps_the_folder_each_file_was_found_in(tmp_path):
    (tmp_path / "scans" / "p1").mkdir(parents=True)
    (tmp_path / "scans" / "p1" / "a.png").write_bytes(png_bytes(seed=1))
    (tmp_path / "b.png").write_bytes(png_bytes(seed=2))
    found = walk([str(tmp_path / "scans"), str(tmp_path / "b.png")])
    assert [f.reference("path") for f in found] == ["p1/a.png", "b.png"]


def test_the_idempotency_key_carries_a_keyed_hash_of_the_reference_never_the_reference():
    upload = Upload(path=Path("x.png"), sha256="ab" * 32)
    plain = upload.idempotency_key("routine")
    with_ref = upload.idempotency_key("routine", "ACC-123", "key-1")
    assert with_ref.startswith(plain + ".ref.") and "ACC-123" not in with_ref
    assert with_ref == upload.idempotency_key(None, "ACC-123", "key-1")  # a re-run: the same key
    assert with_ref != upload.idempotency_key("routine", "ACC-124", "key-1")
    assert with_ref != upload.idempotency_key("routine", "ACC-123", "key-2")  # keyed: not guessable
    assert len(with_ref) <= 255


def test_the_queue_says_no_worker_is_running_instead_of_a_number_and_counts_in_words():
    assert output.queue_text({"jobs_ahead": 7, "eta_seconds": None, "state": "no_worker"}) == (
        "7 jobs ahead, no worker is running"
    )
    assert (
        output.queue_text({"jobs_ahead": 1, "eta_seconds": 2.4, "state": "waiting"})
        == "1 job ahead, about 2 s"
    )
    assert output.queue_text({"jobs_ahead": 0, "eta_seconds": 0.6, "workers": 1, "state": "waiting"}) == (
        "0 jobs ahead, about 1 s"
    )
    assert [plural(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]


def test_the_list_shows_the_reference_and_marks_untrained_results():
    from rich.console import Console

    untrained = {"provenance": {"weights": "untrained"}, "probabilities": {"Effusion": 0.9}}
    trained = {"provenance": {"weights": "densenet121-res224-all"}, "probabilities": {"Mass": 0.2}}
    jobs = [
        {"id": "1" * 36, "reference": "ACC-1", "status": "succeeded", "result": untrained},
        {"id": "2" * 36, "reference": None, "status": "succeeded", "result": trained},
        {"id": "3" * 36, "reference": "ACC-3", "status": "queued", "result": None},
    ]
    for width in (100, 160):
        console = Console(width=width, record=True, color_system=None)
        console.print(output.list_table(jobs, width=width))
        rows = {
            line.split("│")[1].strip(): line for line in console.export_text().splitlines() if "│" in line
        }
        assert "ACC-1" in rows["1" * 36] and "untrained Effusion 0.90" in rows["1" * 36]
        assert "untrained" not in rows["2" * 36] and "Mass 0.20" in rows["2" * 36]
        assert "ACC-3" in rows["3" * 36]


def test_urls_are_taken_with_or_without_the_api_prefix():
    assert normalise_url("http://h:8000/") == normalise_url("http://h:8000/api/v1/") == "http://h:8000"
    assert normalise_url("h:8000") == "http://h:8000"


@pytest.mark.slow
def test_the_package_installs_alone_with_httpx_and_rich_only(tmp_path):
    # Its wheel, built from a copy (the checkout stays clean): the console script and two dependencies.
    import shutil

    source = tmp_path / "cli"
    shutil.copytree(CLI_ROOT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(source),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("cxrq_cli-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"cxrq_cli-{__version__}.dist-info/METADATA").decode()
        entry_points = zf.read(f"cxrq_cli-{__version__}.dist-info/entry_points.txt").decode()
    requires = sorted(
        line.split(":", 1)[1].strip().split(">")[0].split("<")[0]
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    )
    assert requires == ["httpx", "rich"]
    assert "cxrq = cxrq_cli.main:main" in entry_points

    # Imported and run, it loads neither Django, torch nor the project.
    code = (
        "import json, sys; import cxrq_cli.main, cxrq_cli.api, cxrq_cli.files, cxrq_cli.output; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=cli_env(), capture_output=True, text=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "httpx" in loaded and "rich" in loaded
    assert not loaded & {"django", "torch", "numpy", "backend", "worker", "rest_framework"}


def test_make_install_put_the_cxrq_command_in_the_venv():
    """`make install` (so `make run` and `make test`) installs cli/ into the venv: its `cxrq` runs, and is
    this checkout's version."""
    script = Path(sys.executable).with_name("cxrq")
    assert script.exists(), f"{script} missing: run `make install` (the Makefile installs ./cli)"
    out = subprocess.run([str(script), "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"cxrq-cli {__version__}", out
