"""Property-based tests (hypothesis) across every endpoint: random and malformed requests from
an attacker holding keys of its own. The properties, for every request:

- no 5xx (a refused request is a 4xx in the error shape);
- nothing of another client's changes: its jobs, results, Idempotency-Keys, keys and rates;
- nothing of another client's shows: no response names its job ids, and its job's id is
  answered exactly like an unknown id.

CXRQ_HYPOTHESIS_EXAMPLES scales the example counts (default 1: 2,800 reads and other methods and 1,000
uploads, about a minute on two cores).
"""

from __future__ import annotations

import json
import os
import string
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test.client import BOUNDARY, MULTIPART_CONTENT
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from backend.clients import services as clients
from backend.clients.models import ApiKey, Client, Scope
from backend.jobs.models import IdempotencyKey, Job, JobResult
from tests.factories import client_and_key, make_jobs, png_bytes, sample_bytes

pytestmark = pytest.mark.django_db

SCALE = float(os.environ.get("CXRQ_HYPOTHESIS_EXAMPLES", "1"))
UNKNOWN_ID = "7b8f2a5e-4c7e-4f0a-9d55-2b1f6c1d7e11"
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


class World:
    """Hospital B (the victim) with queued, succeeded and keyed jobs; hospital A (the attacker)
    with a key of each scope, a revoked key, and B's key prefix with a made-up secret."""

    def __init__(self, worker) -> None:
        self.victim, victim_key = client_and_key(name="hospital-b")
        victim_api = APIClient()
        victim_api.credentials(HTTP_AUTHORIZATION=f"Api-Key {victim_key}")
        self.victim_jobs = make_jobs(3, start=100, client=self.victim)
        victim_api.post(
            "/api/v1/jobs",
            {"image": SimpleUploadedFile("x.png", sample_bytes("00000001_000.png"))},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="visit-1",
        )
        worker.drain()
        self.victim_ids = [
            str(i) for i in Job.objects.filter(client=self.victim).values_list("id", flat=True)
        ]
        self.victim_bytes = [png_bytes(seed=100), sample_bytes("00000001_000.png")]

        attacker, submit = client_and_key(name="hospital-a")
        read = clients.api_key_create(client=attacker, name="read", scope=Scope.READ).key
        operator = clients.api_key_create(client=attacker, name="op", scope=Scope.OPERATOR).key
        revoked = clients.api_key_create(client=attacker, name="old").key
        clients.api_key_revoke(client=attacker, prefix=revoked.partition(".")[0])
        forged = victim_key.partition(".")[0] + "." + "x" * 32
        self.submit = f"Api-Key {submit}"
        self.authorizations = [f"Api-Key {k}" for k in (submit, read, operator, revoked, forged)]
        self.authorizations += [f"Bearer {submit}", "Api-Key", "Basic dXNlcjpwYXNz", ""]
        self.before = self.snapshot()

    def snapshot(self) -> list:
        return [
            list(Client.objects.filter(pk=self.victim.pk).values()),
            list(Job.objects.filter(client=self.victim).order_by("id").values()),
            list(JobResult.objects.filter(job__client=self.victim).order_by("job_id").values()),
            list(IdempotencyKey.objects.filter(client=self.victim).order_by("key").values()),
            list(ApiKey.objects.filter(client=self.victim).order_by("id").values()),
        ]

    def check(self, api: APIClient, response) -> None:
        event(f"status {response.status_code}")  # the spread: pytest --hypothesis-show-statistics
        assert response.status_code < 500, (response.status_code, response.content[:500])
        body = response.content.decode("utf-8", "replace")
        assert not any(i in body for i in self.victim_ids), body[:500]
        assert self.snapshot() == self.before
        if (
            body
            and response.status_code >= 400
            and response.get("Content-Type", "").startswith("application/json")
        ):
            error = json.loads(body)["error"]
            assert error["code"] and isinstance(error["message"], str)


@pytest.fixture
def world(worker) -> World:
    return World(worker)


def _multipart(parts: list[tuple[str, str | None, str, bytes]]) -> bytes:
    """A multipart body written by hand, so that names and filenames can be anything, quotes
    and line breaks included (a malformed body is part of the test)."""
    out = b""
    for field, filename, content_type, data in parts:
        disposition = f'form-data; name="{field}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode("utf-8", "surrogatepass")
        out += f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "surrogatepass") + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


texts = st.text(min_size=0, max_size=40)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
query = st.dictionaries(
    st.sampled_from(["status", "page", "page_size", "q", "id", "format"]) | texts, texts, max_size=4
)


def _paths(world: World):
    job_ids = st.sampled_from([*world.victim_ids, UNKNOWN_ID, str(uuid.uuid4())])
    junk = st.text(alphabet=string.ascii_letters + string.digits + "-._~%/", max_size=40)
    return st.one_of(
        st.just("/api/v1/jobs"),
        st.just("/api/v1/health"),
        st.sampled_from(["/api/schema/", "/api/docs/", "/api/redoc/"]),
        job_ids.map(lambda i: f"/api/v1/jobs/{i}"),
        job_ids.map(lambda i: f"/api/v1/jobs/{i.upper()}"),
        job_ids.map(lambda i: f"/api/v1/jobs/{i}/cancel"),
        job_ids.map(lambda i: f"/api/v1/jobs/{i.replace('-', '')}"),
        junk.map(lambda s: f"/api/v1/jobs/{s}"),
        junk.map(lambda s: f"/api/v1/{s}"),
        job_ids.map(lambda i: f"/admin/jobs/job/{i}/change/"),
        st.just("/admin/jobs/job/"),
    )


def _headers(world: World):
    return st.fixed_dictionaries(
        # Half with the attacker's own submit key, so that requests get past authentication.
        {"HTTP_AUTHORIZATION": st.just(world.submit) | st.sampled_from(world.authorizations) | header_values},
        optional={
            "HTTP_IDEMPOTENCY_KEY": st.sampled_from(["visit-1", "visit-2"]) | header_values,
            "HTTP_X_REQUEST_ID": header_values,
            "HTTP_ACCEPT": st.sampled_from(["application/json", "text/html", "*/*"]) | header_values,
            "HTTP_X_FORWARDED_FOR": header_values,
            "CONTENT_LENGTH": st.sampled_from(["", "-1", "abc", "99999999999", "0"]),
        },
    )


@pytest.mark.parametrize("method", ["get", "head", "options", "post", "put", "patch", "delete"])
def test_reads_and_other_methods_never_fail_or_leak(world, method):
    api = APIClient()

    @settings(FUZZ, max_examples=int(400 * SCALE))
    @given(path=_paths(world), params=query, headers=_headers(world), body=st.binary(max_size=200))
    def run(path, params, headers, body):
        if method in ("get", "head"):
            response = getattr(api, method)(path, params, **headers)
        else:
            response = api.generic(method.upper(), path, body, "application/octet-stream", **headers)
        world.check(api, response)

    run()


def test_uploads_never_fail_or_leak(world):
    api = APIClient()
    images = st.one_of(
        st.sampled_from(world.victim_bytes),  # B's very bytes: no dedup across clients
        st.integers(0, 50).map(lambda seed: png_bytes(seed=seed)),
        st.sampled_from(world.victim_bytes).flatmap(
            lambda b: st.integers(1, len(b) - 1).map(lambda n: b[:n])
        ),
        st.binary(max_size=2000),
        st.just(sample_bytes("00000001_000.png")[:1000] + b"\x00" * 1000),
    )
    names = st.sampled_from(["x.png", "x.dcm", "", "a" * 300, "../../etc/passwd", "x.jpg\x00.png"]) | texts
    fields = st.just("image") | st.sampled_from(["image", "file", ""]) | texts

    content_types = st.sampled_from(["image/png", "application/dicom", "", "text/plain"]) | header_values
    part = st.tuples(fields, names | st.none(), content_types, images)

    @settings(FUZZ, max_examples=int(1000 * SCALE))
    @given(
        parts=st.lists(part, min_size=0, max_size=3),
        content_type=content_types,
        headers=_headers(world),
        raw=st.booleans(),
    )
    def run(parts, content_type, headers, raw):
        headers.pop("CONTENT_LENGTH", None)  # the test client sets it from the body
        if raw:
            body = parts[0][3] if parts else b""
            response = api.generic(
                "POST", "/api/v1/jobs", body, content_type or "application/octet-stream", **headers
            )
        else:
            response = api.generic("POST", "/api/v1/jobs", _multipart(parts), MULTIPART_CONTENT, **headers)
        world.check(api, response)
        if response.status_code in (200, 202):
            # Whatever it sent, the attacker's job is the attacker's own.
            job = Job.objects.get(pk=response.json()["id"])
            assert job.client.name == "hospital-a"

    run()


def test_the_victims_job_is_answered_like_an_unknown_id_for_every_attacker_key(world):
    api = APIClient()
    for authorization in world.authorizations:
        for job_id in world.victim_ids:
            theirs = api.get(f"/api/v1/jobs/{job_id}", HTTP_AUTHORIZATION=authorization)
            unknown = api.get(f"/api/v1/jobs/{UNKNOWN_ID}", HTTP_AUTHORIZATION=authorization)
            assert (theirs.status_code, theirs.content) == (unknown.status_code, unknown.content)
