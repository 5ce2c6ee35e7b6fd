"""The HTTP edge attacked over sockets: the real server (`make run` and production use the same
command line, backend/edge/server.py), slow and odd clients, bursts, untrusted headers."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from backend.edge.server import server_argv
from tests.factories import ROOT, client_and_key, png_bytes, process_env, sample_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HEAD_TIMEOUT, BODY_TIMEOUT = 2.0, 2.0
PUBLIC_URL = "https://cxrq.hospital.example"


@dataclass
class Server:
    port: int
    proc: subprocess.Popen
    key: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Api-Key {self.key}"}

    def rss_bytes(self) -> int:
        parent = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    yield from _serve(tmp_path, {})


def _serve(tmp_path: Path, extra: dict[str, str]) -> Iterator[Server]:
    _, key = client_and_key(name="edge")
    port = _free_port()
    env = process_env(
        {
            "CXRQ_EDGE_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
            "CXRQ_EDGE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "CXRQ_UPLOAD_MAX_BYTES": str(4 * 1024 * 1024),
            "CXRQ_PUBLIC_URL": PUBLIC_URL,
            "CXRQ_CLIENT_MAX_QUEUED_JOBS": "0",
            "DJANGO_DEBUG": "false",
        }
        | extra
    )
    log = tmp_path / "web.log"
    proc = subprocess.Popen(
        server_argv(f"127.0.0.1:{port}", workers=1),
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    srv = Server(port=port, proc=proc, key=key, log=log)
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{srv.url}/api/v1/health", timeout=2)
            break
        except (requests.ConnectionError, requests.Timeout):  # a first answer can be slow on a busy machine
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    yield srv
    proc.terminate()
    proc.wait(20)


def _connect(server: Server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_all(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _health_latencies(server: Server, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        assert requests.get(f"{server.url}/api/v1/health", timeout=10).status_code in (200, 503)
        out.append(time.monotonic() - t0)
        time.sleep(0.05)
    return out


def test_slow_heads_do_not_stop_health_and_are_cut_off(server):
    """150 connections trickling a request head: health answers within 2 s meanwhile, and each
    slow client gets 408 within the head deadline."""
    slow = [_connect(server) for _ in range(150)]
    for s in slow:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.monotonic()
    latencies = _health_latencies(server, 10)
    for s in slow[:50]:
        with contextlib.suppress(OSError):
            s.sendall(b"X-Slow: 1\r\n")  # still trickling
    assert max(latencies) < 2.0, latencies
    answers = [_read_all(s, HEAD_TIMEOUT + 5) for s in slow]
    assert time.monotonic() - t0 < HEAD_TIMEOUT + 8
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:40] for a in answers}
    assert b'"code": "request_timeout"' in answers[0]


def test_stalled_and_short_bodies_get_408_while_health_answers(server):
    stalled = []
    for _ in range(20):
        s = _connect(server)
        s.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key "
            + server.key.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 5000\r\n\r\n--x\r\n"
        )
        stalled.append(s)
    latencies = _health_latencies(server, 10)
    assert max(latencies) < 2.0, latencies
    answers = [_read_all(s, BODY_TIMEOUT + 5) for s in stalled]
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:60] for a in answers}
    assert all(b"connection: close" in a.lower() for a in answers)


def test_an_honest_huge_content_length_is_refused_without_reading_the_body(server):
    before = server.rss_bytes()
    s = _connect(server)
    s.sendall(
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key "
        + server.key.encode()
        + b"\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 300000000\r\n\r\n"
    )
    answer = b""
    while b"file_too_large" not in answer and (chunk := s.recv(4096)):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"file_too_large" in answer
    sent = 0
    try:  # keep pushing: the server has closed, nothing it holds grows
        for _ in range(300):
            s.sendall(b"\0" * 65536)
            sent += 65536
    except OSError:
        pass
    time.sleep(0.5)
    growth = server.rss_bytes() - before
    assert growth < 20 * 1024 * 1024, (growth, sent)


def test_chunked_uploads_work_within_the_bound_and_413_past_it(server):
    def chunks(data: bytes, size: int = 65536):
        for i in range(0, len(data), size):
            yield data[i : i + size]

    body = (
        b'--x\r\nContent-Disposition: form-data; name="image"; filename="c.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + sample_bytes("00000001_000.png") + b"\r\n--x--\r\n"
    )
    headers = server.headers() | {"Content-Type": "multipart/form-data; boundary=x"}
    ok = requests.post(f"{server.url}/api/v1/jobs", data=chunks(body), headers=headers, timeout=30)
    assert ok.status_code == 202, ok.text
    too_big = requests.post(
        f"{server.url}/api/v1/jobs", data=chunks(b"\0" * (5 * 1024 * 1024)), headers=headers, timeout=30
    )
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "file_too_large"


def test_ordinary_odd_requests_are_4xx_in_the_error_shape_never_500(server):
    big = png_bytes(size=(1600, 1600), seed=1) + b"\0" * (3 * 1024 * 1024)  # spooled to disk by Django
    # Over 2.5 MB, so Django spools it to a temporary file: its name is never the client's.
    long_name = requests.post(
        f"{server.url}/api/v1/jobs",
        files={"image": ("x." + "e" * 240, big)},
        headers=server.headers(),
        timeout=30,
    )
    assert long_name.status_code == 202, long_name.text[:300]
    assert len(long_name.json()["original_filename"]) <= 255
    cases = {
        "1,001 query parameters": requests.get(
            f"{server.url}/api/v1/health?" + "&".join(f"p{i}=1" for i in range(1001)), timeout=10
        ),
        "two images": requests.post(
            f"{server.url}/api/v1/jobs",
            files=[("image", ("a.png", png_bytes(seed=2))), ("image", ("b.png", png_bytes(seed=3)))],
            headers=server.headers(),
            timeout=30,
        ),
        "unknown host": requests.get(
            f"{server.url}/api/v1/jobs", headers={"Host": "evil.example"}, timeout=10
        ),
        "unknown path": requests.get(f"{server.url}/nowhere", timeout=10),
    }
    for name, response in cases.items():
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
        assert response.headers["Content-Type"].startswith("application/json"), (name, response.text[:300])
        assert json.loads(response.text)["error"]["code"], name
    assert cases["two images"].json()["error"]["code"] == "multiple_images"
    s = _connect(server)
    s.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n")
    assert _read_all(s, 5).split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 ")


def test_fifty_concurrent_uploads_get_answers_not_resets(server):
    def upload(seed: int) -> int:
        return requests.post(
            f"{server.url}/api/v1/jobs",
            files={"image": (f"{seed}.png", png_bytes(seed=seed))},
            headers=server.headers(),
            timeout=60,
        ).status_code

    with cf.ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(upload, range(1000, 1050)))
    assert codes == [202] * 50, codes


def test_host_and_forwarded_headers_are_not_believed_from_an_untrusted_peer(server):
    headers = server.headers() | {
        "Host": "127.0.0.1:6666",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
    }
    created = requests.post(
        f"{server.url}/api/v1/jobs",
        files={"image": ("h.png", png_bytes(seed=4))},
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 202
    assert created.json()["url"].startswith(f"{PUBLIC_URL}/api/v1/jobs/")
    assert created.headers["Location"] == created.json()["url"]
    listing = requests.get(f"{server.url}/api/v1/jobs?page_size=1", headers=headers, timeout=10).json()
    assert listing["results"][0]["url"].startswith(PUBLIC_URL)
    response = requests.get(f"{server.url}/api/v1/health", headers=headers, timeout=10)
    assert "server" not in {k.lower() for k in response.headers}
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    # The audit log records the peer's address, not the one it claimed.
    from backend.audit.models import AuditEvent

    event = AuditEvent.objects.filter(action="job.created").latest("id")
    assert event.address == "127.0.0.1"


@pytest.fixture
def dev_settings_server(tmp_path) -> Iterator[Server]:
    """The server as `make run` configures it (development settings: persistent connections on)."""
    yield from _serve(tmp_path, {"DJANGO_SETTINGS_MODULE": "backend.settings.dev", "CXRQ_WEB_THREADS": "4"})


def test_a_burst_does_not_pile_up_database_connections(dev_settings_server):
    """Django's ASGI handler gave every request a thread of its own: with persistent connections
    each kept a PostgreSQL connection, and a burst ended in "too many clients" (503s). Now a
    fixed pool of 4 threads keeps at most 4 (plus the server's own checks)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("counts PostgreSQL connections (start PostgreSQL on 127.0.0.1:5432)")
    srv = dev_settings_server

    def read(_: int) -> int:
        return requests.get(f"{srv.url}/api/v1/jobs", headers=srv.headers(), timeout=30).status_code

    with cf.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(read, range(200)))
    assert codes == [200] * 200, sorted(set(codes))
    pids = {
        p.pid for p in [psutil.Process(srv.proc.pid), *psutil.Process(srv.proc.pid).children(recursive=True)]
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        )
        (open_connections,) = cursor.fetchone()
    assert open_connections <= 4 + 2, (open_connections, pids)


def test_a_head_over_the_bound_is_431_and_closed(server):
    s = _connect(server)
    s.sendall(
        b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    )
    answer = _read_all(s, 5)
    assert answer.startswith(b"HTTP/1.1 431") and b"request_head_too_large" in answer


@pytest.fixture
def production_server(tmp_path) -> Iterator[Server]:
    """The server with production settings (JSON logs, the HTTPS redirect) on the test's database
    and broker. 127.0.0.1 is an allowed host, as where the issue's redirect was seen."""
    from tests.factories import phi_key

    yield from _serve(
        tmp_path,
        {
            "DJANGO_SETTINGS_MODULE": "backend.settings.production",
            "DJANGO_SECRET_KEY": "p" * 64,
            "DJANGO_ALLOWED_HOSTS": "cxrq.hospital.example,127.0.0.1",
            "CXRQ_MODEL_WEIGHTS_SHA256": "a" * 64,
            "CXRQ_PHI_KEY": phi_key(),
            "CXRQ_MODEL_FAKE": "false",
        },
    )


def test_production_redirects_plain_http_to_the_public_url_never_to_the_host(production_server):
    srv = production_server
    for method in ("GET", "POST"):
        response = requests.request(
            method,
            f"{srv.url}/api/v1/jobs?page=2",
            headers={"Host": "127.0.0.1:31337", "X-Forwarded-Host": "evil.example"},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == (301 if method == "GET" else 308), response.text[:200]
        assert response.headers["Location"] == f"{PUBLIC_URL}/api/v1/jobs?page=2"
    assert requests.get(f"{srv.url}/api/v1/health", timeout=10).status_code in (200, 503)  # exempt


def test_a_bad_host_is_one_short_warning_line_in_the_servers_log(production_server):
    srv = production_server
    start = srv.log.stat().st_size
    for _ in range(20):
        response = requests.get(f"{srv.url}/api/v1/health", headers={"Host": "evil.example"}, timeout=10)
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    with srv.log.open("rb") as f:
        f.seek(start)
        written = f.read().decode()
    lines = [json.loads(line) for line in written.splitlines() if "disallowed_host" in line]
    assert len(lines) == 20, written[-2000:]
    assert {line["level"] for line in lines} == {"WARNING"}
    assert "Traceback" not in written and "exc_info" not in written
    assert max(len(line) for line in written.splitlines()) < 600, written[-2000:]


MALFORMED = {
    "negative content-length": b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
    "non-numeric content-length": b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
    "signed content-length": b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: +3\r\n\r\nabc",
    "two different lengths": (
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
    ),
    "content-length with transfer-encoding": (
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bare LF": b"GET /api/v1/health HTTP/1.1\nHost: 127.0.0.1\n\n",
    "NUL in the path": b"GET /api/v1/he\x00alth HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "unknown method": b"FROB /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


def test_malformed_requests_are_400_in_the_error_shape_and_closed(server):
    """uvicorn answered each of these with text/plain "Invalid HTTP request received."."""
    for case, request in MALFORMED.items():
        s = _connect(server)
        s.sendall(request)
        answer = _read_all(s, 5)
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 400 Bad Request", (case, answer[:300])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        assert headers[b"content-type"] == b"application/json", (case, answer[:300])
        assert headers[b"connection"] == b"close", case
        assert int(headers[b"content-length"]) == len(body), case
        error = json.loads(body)["error"]
        assert error["code"] == "bad_request" and error["message"] and error["details"] == {}, case


@pytest.fixture
def h11_server(tmp_path) -> Iterator[Server]:
    yield from _serve(tmp_path, {"CXRQ_EDGE_HTTP": "h11"})


def test_with_h11_no_answer_is_uvicorns_plain_text(h11_server):
    """h11 (CXRQ_EDGE_HTTP=h11) refuses the framing errors as httptools does, and is more lenient
    with the rest (bare LF; a method or target it does not know goes to Django: 405 / 404)."""
    refused = {"negative content-length", "non-numeric content-length", "signed content-length"}
    refused |= {"two different lengths", "NUL in the path"}
    for case, request in MALFORMED.items():
        s = _connect(h11_server)
        s.sendall(request)
        answer = _read_all(s, 5)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"content-type: application/json" in head.lower(), (case, answer[:300])
        assert b"Invalid HTTP request" not in body, case
        if case in refused:
            assert head.startswith(b"HTTP/1.1 400 Bad Request"), (case, answer[:300])
            assert json.loads(body)["error"]["code"] == "bad_request", case
