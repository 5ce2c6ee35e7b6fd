"""The published contract: an OpenAPI 3.1 schema from the code, and its pages, offline."""

from __future__ import annotations

import re
from io import StringIO

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_the_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stdout=StringIO())
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"] == "3.1.0"
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/health"} <= set(schema["paths"])


def test_the_schema_is_public_and_documents_keys_errors_and_examples(anonymous_api):
    response = anonymous_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    upload = schema["paths"]["/api/v1/jobs"]["post"]
    assert upload["security"] == [{"ApiKey": []}]
    assert set(upload["requestBody"]["content"]) == {"multipart/form-data"}
    for status in ("200", "202", "400", "401", "403", "408", "409", "413", "415", "429", "503"):
        assert status in upload["responses"], status
    assert "`multiple_images`" in upload["responses"]["400"]["description"]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if status == "304":  # Not Modified has no body to show
                    assert "content" not in response, (path, method)
                    continue
                media = response.get("content", {})
                content = media.get("application/json") or next(iter(media.values()), {})
                if content.get("schema", {}).get("format") == "binary":  # a file (DICOM): no example
                    continue
                assert content.get("examples"), (path, method, status)  # an example per response
    # Health needs no key.
    assert {} in schema["paths"]["/api/v1/health"]["get"]["security"]


def test_the_docs_pages_load_their_assets_from_this_server(anonymous_api):
    for page in ("/api/docs/", "/api/redoc/"):
        response = anonymous_api.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(not a.startswith(("http://", "https://", "//")) for a in assets), assets
        for asset in assets:
            if asset.startswith("/static/"):
                assert anonymous_api.get(asset).status_code == 200, asset
