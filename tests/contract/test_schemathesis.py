"""The published contract holds for the live server: schemathesis generates requests for every
operation that `/api/schema/` lists at run time (whatever was added since), sends them with a
client's key to the real server, and checks every answer: never a 5xx, and only documented status
codes, content types and bodies that match the response schema.

Three runs per operation: generated valid requests (positive), generated invalid ones (negative),
and, for operations with ids in their path, generated requests on the ids of real resources. Before
them, every multipart operation gets uploads of the sample images (tests/data/cxr), a worker ends
those jobs, and they are sent again: the success paths (202 new, 200 cached with its result) are
checked too, not only refusals of random bytes.

CXRQ_SCHEMATHESIS_EXAMPLES: examples per operation and run (default 50: about 15 s here).
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import DATA, png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("CXRQ_SCHEMATHESIS_EXAMPLES", "50"))
CONTRACT = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # No shrinking: a failure is reported as found (its request and response), in bounded time.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SAMPLES = sorted(p for p in DATA.iterdir() if p.suffix.lower() in (".png", ".jpg", ".dcm"))
DESTRUCTIVE = ("DELETE", "POST", "PUT", "PATCH")


class Run:
    """Sends cases, validates their answers, and keeps what it saw: status codes per operation and
    the ids of the resources the server made (by the collection in their `url`)."""

    def __init__(self, server) -> None:
        self.server = server
        self.session = requests.Session()
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.ids: dict[str, list[str]] = defaultdict(list)
        self.failures: dict[tuple, list] = {}
        self.last: tuple[Any, schemathesis.Response | None] = (None, None)

    def send(self, case) -> schemathesis.Response:
        self.last = (case, None)
        response = case.call(
            base_url=self.server.url, session=self.session, headers=self.server.auth, timeout=30
        )
        self.last = (case, response)
        self.statuses[case.operation.label][response.status_code] += 1
        if response.status_code < 300 and "json" in _content_type(response):
            self._collect(response.json())
        case.validate_response(response, checks=CHECKS, headers=self.server.auth)
        return response

    def describe_failure(self, exc: BaseException) -> str:
        """The request and the answer that failed, and why: short, without the key or image bytes."""
        case, response = self.last
        lines = []
        if case is not None:
            request = f"{case.method.upper()} {case.formatted_path}"
            if case.query:
                request += f" query={case.query}"
            headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            lines.append(f"request: {request} headers={headers} body={_summary(case.body)}")
        if response is not None:
            lines.append(
                f"response: {response.status_code} {_content_type(response)} {response.text[:300]!r}"
            )
        return "\n  ".join(lines)

    def fail(self, label: str, exc: BaseException) -> None:
        """Record a failure once per operation and reason: the same reason recurs across examples
        with other ids and times, so it is keyed by the check and the schema location it broke."""
        causes = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        reasons, keys = [], []
        for cause in causes:
            title = getattr(cause, "title", type(cause).__name__)
            message = " ".join(getattr(cause, "message", str(cause)).split())
            reasons.append(f"- {title}: {message[:600]}")
            where = re.search(r"Schema at (\S+?):", message)
            keys.append(
                f"{title} {where.group(1) if where else re.sub(r'[0-9a-f-]{8,}|[0-9]+', '#', message)[:200]}"
            )
        key = (label.split(" [")[0].split(" (")[0], tuple(sorted(keys)))
        if key in self.failures:
            self.failures[key][1] += 1
        else:
            self.failures[key] = [f"{label}:\n  {self.describe_failure(exc)}\n  " + "\n  ".join(reasons), 1]

    def report(self) -> str:
        return "\n\n".join(
            first + (f"\n  (and {n - 1} more like it)" if n > 1 else "")
            for first, n in self.failures.values()
        )

    def _collect(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self._collect(item)
        elif isinstance(node, dict):
            if isinstance(node.get("id"), str) and isinstance(node.get("url"), str):
                parts = urlparse(node["url"]).path.rstrip("/").split("/")
                if len(parts) >= 2 and parts[-1] == node["id"] and node["id"] not in self.ids[parts[-2]]:
                    self.ids[parts[-2]].append(node["id"])
            for value in node.values():
                self._collect(value)

    def ids_for(self, parameter: str) -> list[str]:
        """Real ids for a path parameter `job_id` / `batch_id`: those of `jobs/` / `batches/`."""
        stem = parameter.removesuffix("_id")
        for collection in (f"{stem}s", f"{stem}es", stem):
            if self.ids.get(collection):
                return self.ids[collection]
        return []


def _content_type(response: schemathesis.Response) -> str:
    return ",".join(response.headers.get("content-type", []))


def _summary(body: Any) -> str:
    if body is NOT_SET:
        return "-"
    if isinstance(body, bytes):
        return f"<{len(body)} bytes {body[:8]!r}>"
    if isinstance(body, dict):
        return "{" + ", ".join(f"{k!r}: {_summary(v)}" for k, v in body.items()) + "}"
    if isinstance(body, list):
        return "[" + ", ".join(_summary(v) for v in body) + "]"
    return repr(body)[:200]


def _resolve(node: Any, root: dict) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _is_file(prop: dict, root: dict) -> bool:
    prop = _resolve(prop, root)
    return prop.get("format") == "binary" or prop.get("contentMediaType") == "application/octet-stream"


def valid_bodies(raw: dict, path: str, method: str, images: list[bytes]) -> list[dict]:
    """Multipart bodies of these images for this operation, from its schema: a file field gets one
    image per body; an array of files gets up to three, plus one that is not an image; enums take turns."""
    body = raw["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
    form = _resolve(body.get("multipart/form-data", {}).get("schema"), raw)
    if not form:
        return []
    properties = {name: _resolve(p, raw) for name, p in form.get("properties", {}).items()}
    bodies = []
    for i, data in enumerate(images):
        values = {}
        for name, prop in properties.items():
            if _is_file(prop, raw):
                values[name] = data
            elif prop.get("type") == "array" and _is_file(prop.get("items", {}), raw):
                values[name] = [*images[i : i + 3], b"not an image at all"]
            elif prop.get("enum"):
                values[name] = prop["enum"][i % len(prop["enum"])]
            elif name in form.get("required", ()):
                values[name] = prop.get("default", prop.get("example"))
        bodies.append(values)
    return bodies


def _fuzz(run: Run, label: str, strategy) -> None:
    @CONTRACT
    @given(case=strategy)
    def fuzz(case) -> None:
        run.send(case)

    try:
        fuzz()
    except Unsatisfiable:
        pass  # nothing of this kind can be generated for this operation (e.g. no negative form)
    except (Exception, BaseExceptionGroup) as exc:
        run.fail(label, exc)


def test_every_operation_of_the_live_schema_answers_as_documented(contract_server, worker):
    url = contract_server.url
    raw = requests.get(f"{url}/api/schema/?format=json", timeout=30).json()
    schema = schemathesis.openapi.from_url(f"{url}/api/schema/?format=json", timeout=30)
    loaded = list(schema.get_all_operations())
    assert all(hasattr(r, "ok") for r in loaded), [r.err() for r in loaded if not hasattr(r, "ok")]
    operations = [r.ok() for r in loaded]
    listed = {
        f"{method.upper()} {path}"
        for path, methods in raw["paths"].items()
        for method in methods
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    }
    assert {op.label for op in operations} == listed and listed
    run = Run(contract_server)

    # Real images through every multipart operation; a worker ends those jobs; the same bytes again
    # (cached); then new images left queued, for the operations on waiting jobs (cancel).
    samples = [p.read_bytes() for p in SAMPLES]
    rounds = (("new", samples), ("cached", samples), ("queued", [png_bytes(seed=s) for s in range(3)]))
    for attempt, images in rounds:
        for op in operations:
            for body in valid_bodies(raw, op.path, op.method, images):
                try:
                    response = run.send(op.Case(body=body, media_type="multipart/form-data"))
                except (Exception, BaseExceptionGroup) as exc:
                    run.fail(f"{op.label} ({attempt} upload of images)", exc)
                    continue
                if attempt == "cached" and "image" in body:
                    assert response.status_code == 200, (op.label, response.status_code, response.text[:500])
                    assert response.json()["result"]["probabilities"], response.text[:500]
        if attempt == "new":
            worker.drain()
    assert run.ids_for("job_id"), dict(run.ids)

    # Conditional reads: an operation that takes If-None-Match, sent back the ETag of a real resource.
    for op in operations:
        names = [p.name for p in op.path_parameters]
        if "If-None-Match" not in [p.name for p in op.headers] or not names:
            continue
        fixed = {name: run.ids_for(name)[0] for name in names if run.ids_for(name)}
        if len(fixed) < len(names):
            continue
        try:
            etag = run.send(op.Case(path_parameters=fixed)).headers["etag"][0]
            assert (
                run.send(op.Case(path_parameters=fixed, headers={"If-None-Match": etag})).status_code == 304
            )
        except (Exception, BaseExceptionGroup) as exc:
            run.fail(f"{op.label} (If-None-Match: its ETag)", exc)

    # Safe methods first, so that the reads of real ids come before what changes them; DELETE last.
    for op in sorted(
        operations, key=lambda o: (o.method.upper() in DESTRUCTIVE, o.method.upper() == "DELETE")
    ):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(
                run,
                f"{op.label} [{mode.value}]",
                op.as_strategy(mode, headers=contract_server.auth),
            )
        names = [p.name for p in op.path_parameters]
        real = {name: run.ids_for(name) for name in names}
        if names and all(real.values()):
            strategy = st.fixed_dictionaries({n: st.sampled_from(v) for n, v in real.items()}).flatmap(
                lambda fixed, op=op: op.as_strategy(path_parameters=fixed, headers=contract_server.auth)
            )
            _fuzz(run, f"{op.label} [positive, real ids]", strategy)

    if run.failures:
        pytest.fail(run.report(), pytrace=False)
    statuses = {label: dict(counts) for label, counts in run.statuses.items()}
    # Every operation the schema lists was exercised, and each answered with a success at least once.
    assert set(statuses) == listed, (listed - set(statuses), statuses)
    no_success = [label for label, counts in statuses.items() if not any(200 <= c < 300 for c in counts)]
    assert not no_success, f"no 2xx from {no_success}; status codes seen: {statuses}"
