"""The Kubernetes manifests (deploy/k8s): rendered by kustomize as an operator would, validated
offline against a pinned Kubernetes version, and checked against the code they run: probes on
real URLs, environment variables the settings read, the worker's stop time against its drain,
the autoscaler's query against the selector's (the same text, the same count), the DICOM
receiver's port and probes against the process."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections import Counter
from functools import cache
from io import StringIO
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.core.management import call_command, get_commands
from django.db import connection
from django.test import Client as DjangoClient
from django.urls import resolve

from backend.jobs import selectors
from backend.jobs.health import HealthApi
from backend.jobs.models import Job, JobStatus
from backend.jobs.services import claims, deletion, operators
from tests.factories import ROOT, claim, client_and_key, expire, make_jobs, process_env

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
# The Kubernetes version the manifests are validated against (kubernetes-validate ships its
# schemas; nothing is fetched).
KUBERNETES_VERSION = "1.31.0"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda-v2.schema.json").read_text())
APP_COMPONENTS = {"web", "worker", "dispatcher", "dicom", "migrate"}
# Read by the process, not by our settings: libraries that cache under the home directory.
NOT_SETTINGS = {"HOME"}
SECRET_NAMES = re.compile(r"SECRET|TOKEN|PASSWORD|DATABASE_URL|BROKER_URL|CACHE_URL|_KEY$", re.I)


@cache
def render(overlay: str) -> tuple[dict, ...]:
    """The overlay as `kubectl apply -k` would send it (kustomize, as built into kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `apt-get install kubectl` (it carries kustomize)")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def base_files() -> list[dict]:
    """The base's YAML files as written (no kustomize needed)."""
    return [
        d
        for path in sorted((K8S / "base").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]


def one(docs, kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def workloads(docs) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict, *, init: bool = True) -> list[dict]:
    spec = pod_spec(workload)
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def config_maps(docs) -> dict[str, dict]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


def effective_env(docs, container: dict) -> dict[str, object]:
    """What the container's process sees: its ConfigMaps (in order) and then its own env. A value
    from a Secret is ('secret', name, key); an operator's ConfigMap not in the repo, ('site', key)."""
    maps = config_maps(docs)
    env: dict[str, object] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(maps.get(name, {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = ("secret", ref["name"], ref["key"])
    return env


def operator_commands() -> dict[str, dict[str, str]]:
    """The `kubectl create secret|configmap` commands of deploy/k8s/README.md: {name: {key: value}}."""
    text = (K8S / "README.md").read_text()
    objects = {}
    for command in re.findall(
        r"kubectl -n cxrq create (?:secret generic|configmap) .*?(?:\n(?!\s)|\Z)", text, re.S
    ):
        words = shlex.split(command.replace("\\\n", " "), posix=True)
        name = words[6] if words[4] == "secret" else words[5]
        objects[name] = dict(
            w.removeprefix("--from-literal=").split("=", 1) for w in words if w.startswith("--from-literal=")
        )
    return objects


def settings_default(name: str) -> str:
    """The default backend/settings/base.py gives an environment variable (`env.int("X", default=1)`)."""
    text = (ROOT / "backend" / "settings" / "base.py").read_text()
    found = re.search(r'env\.\w+\(\s*"' + re.escape(name) + r'",\s*default=([^,)]+)\)', text)
    assert found, name
    return found.group(1).strip().strip('"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_read(name: str) -> bool:
    """Whether the code reads this environment variable (backend/settings, the server's config...)."""
    pattern = re.compile(
        r'(?:env\.\w+|environ\.get|environ\.setdefault|_env_int|getenv)\(\s*"' + re.escape(name) + '"'
    )
    return any(pattern.search(p.read_text()) for d in ("backend", "worker") for p in (ROOT / d).rglob("*.py"))


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_pinned_kubernetes_and_keda_schemas(overlay):
    docs = render(overlay)
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == 4 and kinds["Job"] == 1 and kinds["ScaledObject"] == 1
    assert {"Service", "ConfigMap", "PersistentVolumeClaim", "PodDisruptionBudget", "NetworkPolicy"} <= set(
        kinds
    )
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, {**KEDA_SCHEMA, "$ref": f"#/$defs/{doc['kind']}"})
        else:
            assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == "1.31"


def test_the_validators_refuse_a_broken_manifest():
    """The checks above can fail: a misspelt field and a non-string KEDA metadata value are refused."""
    deployment = copy.deepcopy(one(render("cpu"), "Deployment", "cxrq-web"))
    pod_spec(deployment)["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(one(render("cpu"), "ScaledObject", "cxrq-worker"))
    scaled["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = 100
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, {**KEDA_SCHEMA, "$ref": "#/$defs/ScaledObject"})


# --- the autoscaler's query is the code's --------------------------------------------------------


def postgresql_queries(docs) -> list[str]:
    return [
        t["metadata"]["query"]
        for d in docs
        if d["kind"] == "ScaledObject"
        for t in d["spec"]["triggers"]
        if t["type"] == "postgresql"
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_query_is_the_one_the_code_uses(overlay):
    rendered, written = postgresql_queries(render(overlay)), postgresql_queries(base_files())
    assert rendered == written == [selectors.QUEUE_DEPTH_SQL]
    out = StringIO()
    call_command("queue_depth", "--sql", stdout=out)
    assert out.getvalue().strip() == selectors.QUEUE_DEPTH_SQL


@pytest.mark.django_db
def test_keda_query_counts_what_the_selector_counts(settings):
    """Jobs in every status, over several clients and two model versions: the manifest's query,
    run as KEDA runs it, gives the selector's number, and that number is queued + in progress."""
    if connection.vendor != "postgresql":
        pytest.skip("KEDA's scaler queries PostgreSQL; this run has no PostgreSQL")
    settings.RETRY_BACKOFF_SECONDS = 600
    clients = [client_and_key(name)[0] for name in ("hospital-a", "hospital-b", "clinic-c")]
    for i, client in enumerate(clients):
        make_jobs(6, start=100 * i, client=client)
    stored = claim(2)
    claims.job_store_results(
        batch=stored,
        outcomes=[
            claims.InferenceOutcome(job_id=j, probabilities={}, provenance={}, timings={})
            for j in stored.job_ids
        ],
    )
    failed = claim(1)
    claims.job_fail(job_id=failed.job_ids[0], claim_token=failed.claim_token, code="bad_image", message="x")
    backoff = claim(1)  # back to the queue, not claimable for ten minutes
    claims.job_retry_later(job_ids=backoff.job_ids, claim_token=backoff.claim_token, code="db", message="x")
    expire(claim(2))  # in progress, its lease lapsed: a reaper must come for it
    claim(3)  # in progress
    queued = list(Job.objects.filter(status=JobStatus.QUEUED).exclude(id__in=backoff.job_ids))
    operators.job_cancel_queued(job_ids=[queued[0].id], reason="operator")
    deletion.job_delete(client=queued[1].client, job_id=queued[1].id)
    settings.PRECISION = "fast"  # another model version: still work that needs a worker
    make_jobs(2, start=900, client=clients[1])

    by_status = Counter(Job.objects.values_list("status", flat=True))
    assert set(by_status) == {s.value for s in JobStatus}
    assert len({c for (c,) in Job.objects.values_list("client").distinct()}) == 3
    with connection.cursor() as cursor:
        cursor.execute(postgresql_queries(render("cpu"))[0])
        (from_manifest,) = cursor.fetchone()
    expected = by_status[JobStatus.QUEUED] + by_status[JobStatus.IN_PROGRESS]
    # 3 clients x 6 + 2 of the other version, less 2 succeeded, 1 failed, 1 cancelled, 1 deleted.
    assert from_manifest == selectors.scaling_queue_depth() == expected == 15
    out = StringIO()
    call_command("queue_depth", stdout=out)
    assert out.getvalue().strip() == "15"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling_fills_the_queue_limit_and_can_stop(overlay):
    docs = render(overlay)
    spec = one(docs, "ScaledObject", "cxrq-worker")["spec"]
    trigger = spec["triggers"][0]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cxrq-worker"}
    worker = one(docs, "Deployment", "cxrq-worker")
    assert "replicas" not in worker["spec"]  # the ScaledObject owns the count
    limit = int(effective_env(docs, containers(worker)[0])["CXRQ_MAX_QUEUE_DEPTH"])
    assert spec["maxReplicaCount"] * float(trigger["metadata"]["targetQueryValue"]) == limit
    assert spec["minReplicaCount"] == 0 and float(trigger["metadata"]["activationTargetQueryValue"]) == 0
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "cxrq-secrets", "key": "DATABASE_URL"}
    ]


# --- the manifests against the code --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_probes_reach_health_with_the_operators_allowed_hosts(overlay, settings):
    docs = render(overlay)
    web = one(docs, "Deployment", "cxrq-web")
    container = containers(web, init=False)[0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    site_hosts = operator_commands()["cxrq-site"]["DJANGO_ALLOWED_HOSTS"].split(",")
    settings.ALLOWED_HOSTS = site_hosts
    http_probes = [
        container[k]["httpGet"] for k in ("startupProbe", "readinessProbe") if "httpGet" in container[k]
    ]
    assert len(http_probes) == 2
    for probe in http_probes:
        assert probe["port"] in ports
        assert resolve(probe["path"]).func.view_class is HealthApi
        host = {h["name"]: h["value"] for h in probe["httpHeaders"]}["Host"]
        assert host == one(docs, "Service", "cxrq-web")["metadata"]["name"]
        response = DjangoClient().get(probe["path"], HTTP_HOST=host)
        assert response.status_code == 200, response.content
    # Liveness does not ask the database: an outage must not restart every web pod.
    assert container["livenessProbe"]["tcpSocket"]["port"] in ports
    settings.ALLOWED_HOSTS = [h for h in site_hosts if h != host]
    assert DjangoClient().get(http_probes[0]["path"], HTTP_HOST=host).status_code == 400


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_stop_periods_cover_what_each_process_finishes(overlay):
    docs = render(overlay)
    worker = one(docs, "Deployment", "cxrq-worker")
    env = effective_env(docs, containers(worker)[0])
    # worker/tasks.py: a drain's hard time limit is DRAIN_MAX + BATCH_TIME_LIMIT + 10 seconds.
    hard_limit = float(env["CXRQ_DRAIN_MAX_SECONDS"]) + float(env["CXRQ_BATCH_TIME_LIMIT_SECONDS"]) + 10
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= hard_limit + 5
    web = one(docs, "Deployment", "cxrq-web")
    web_env = effective_env(docs, containers(web, init=False)[0])
    graceful = float(web_env["CXRQ_WEB_GRACEFUL_TIMEOUT_SECONDS"])
    assert graceful >= float(web_env["CXRQ_LONG_POLL_MAX_SECONDS"])
    assert pod_spec(web)["terminationGracePeriodSeconds"] >= graceful + 5
    dispatcher = one(docs, "Deployment", "cxrq-dispatcher")
    assert pod_spec(dispatcher)["terminationGracePeriodSeconds"] >= 10 + 5  # a webhook attempt's deadline
    # The receiver: an association waits at most the DIMSE timeout for its next message, and
    # run_dicom's stop (backend/dicomnet/scp.py) waits at most 10 s for its server thread.
    dicom = one(docs, "Deployment", "cxrq-dicom")
    dicom_env = effective_env(docs, containers(dicom, init=False)[0])
    dimse = float(dicom_env["CXRQ_DICOM_DIMSE_TIMEOUT_SECONDS"])
    assert pod_spec(dicom)["terminationGracePeriodSeconds"] >= max(dimse, 10) + 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_one_the_code_reads(overlay):
    docs = render(overlay)
    names = {k for data in config_maps(docs).values() for k in data}
    names |= {v["name"] for w in workloads(docs) for c in containers(w) for v in c.get("env", [])}
    names |= {k for keys in operator_commands().values() for k in keys}
    unread = sorted(n for n in names - NOT_SETTINGS if not settings_read(n))
    assert unread == []
    assert not settings_read("CXRQ_NO_SUCH_SETTING")


def pod_environments(docs, broker_url: str):
    """A function giving each container's environment as the pod would have it: the repository's
    ConfigMap, the README's cxrq-site and cxrq-secrets with generated values (the test database in
    place of the site's), its own env."""
    commands = operator_commands()
    site_vars = {"CXRQ_HOST": "cxrq.hospital.example", "CXRQ_INGRESS_ADDRESSES": "192.0.2.10"}
    site = {
        key: string.Template(value).substitute(site_vars)
        for key, value in commands["cxrq-site"].items()
        if "$(" not in value
    }
    site["CXRQ_MODEL_WEIGHTS_SHA256"] = hashlib.sha256(b"the approved weights file").hexdigest()
    assert set(site) == set(commands["cxrq-site"])
    generated = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": process_env()["DATABASE_URL"],  # the test database, in place of the site's
        "CELERY_BROKER_URL": broker_url,
        "CXRQ_METRICS_TOKEN": secrets.token_urlsafe(32),
        "CXRQ_PHI_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    assert set(generated) == set(commands["cxrq-secrets"])
    site_map = {"kind": "ConfigMap", "metadata": {"name": "cxrq-site"}, "data": site}

    def environment(container: dict) -> dict[str, str]:
        return {
            k: generated[v[2]] if isinstance(v, tuple) else str(v)
            for k, v in effective_env([*docs, site_map], container).items()
        }

    return environment


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_production_settings_accept_every_containers_configuration(overlay, settings):
    """Each container's environment, as the pod would have it (pod_environments), passes
    production's fail-fast checks and `check --deploy`; the init containers' own command runs
    against the test database as it would against the real one."""
    docs = render(overlay)
    environment = pod_environments(docs, settings.CELERY_BROKER_URL)
    checked = set()
    for workload in workloads(docs):
        for container in containers(workload):
            env = environment(container)
            command = container["command"]
            if command != ["python", "manage.py", "migrate", "--check"]:
                command = ["python", "manage.py", "check", "--deploy", "--fail-level", "ERROR"]
            key = (json.dumps(env, sort_keys=True), tuple(command))
            if key in checked:
                continue
            checked.add(key)
            out = subprocess.run(
                [sys.executable, *command[1:]],
                cwd=ROOT,
                env={"PATH": os.environ["PATH"], "HOME": str(ROOT / "var"), **env},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, (workload["metadata"]["name"], container["name"], out.stderr[-2000:])
    assert len(checked) >= 6  # web, worker, dispatcher, dicom, migrate, the init containers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_and_workers_agree_on_the_model_version(overlay):
    """The model version comes from these settings (backend/jobs/model_identity.py): set once, in
    the shared ConfigMap and the operator's, never per container."""
    docs = render(overlay)
    identity = ("CXRQ_MODEL_WEIGHTS_SHA256", "CXRQ_PRECISION", "CXRQ_DICOM_APPLY_VOI_LUT")
    generated = next(n for n in config_maps(docs) if n.startswith("cxrq-config"))
    for workload in workloads(docs):
        for container in containers(workload):
            assert not {v["name"] for v in container.get("env", [])} & set(identity)
            assert [s["configMapRef"]["name"] for s in container["envFrom"]] == [generated, "cxrq-site"]
    assert "CXRQ_MODEL_WEIGHTS_SHA256" in operator_commands()["cxrq-site"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_kept_in_the_repository(overlay):
    docs = render(overlay)
    assert [d for d in docs if d["kind"] == "Secret"] == []
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), path
    for data in config_maps(docs).values():
        assert not [k for k in data if SECRET_NAMES.search(k)]
        assert not [v for v in data.values() if re.search(r"://[^/@\s]*:[^/@\s]*@", v)]
    required_keys = set()
    for workload in workloads(docs):
        for container in containers(workload):
            for var in container.get("env", []):
                if SECRET_NAMES.search(var["name"]):
                    ref = var["valueFrom"]["secretKeyRef"]  # never a literal value
                    assert ref["name"] == "cxrq-secrets"
                    required_keys.add(ref["key"])
    # The README's command creates every key the manifests read, with generated or operator values.
    assert required_keys <= set(operator_commands()["cxrq-secrets"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged_with_bounded_resources(overlay):
    for workload in workloads(render(overlay)):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 1000  # the Dockerfile's user
        assert spec["automountServiceAccountToken"] is False
        for container in containers(workload):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (
                    workload["metadata"]["name"],
                    bound,
                )
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts  # the only writable place besides the volumes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_are_the_projects(overlay):
    docs = render(overlay)
    commands = {c["name"]: c["command"] for w in workloads(docs) for c in containers(w)}
    assert commands["web"] == ["gunicorn", "-c", "python:backend.edge.server", "backend.asgi:application"]
    assert commands["worker"] == ["python", "-m", "worker"]
    assert commands["dicom"] == ["python", "manage.py", "run_dicom"]  # no --port: CXRQ_DICOM_PORT decides
    assert (ROOT / "worker" / "__main__.py").is_file() and (ROOT / "backend" / "edge" / "server.py").is_file()
    for command in commands.values():
        if command[:2] == ["python", "manage.py"]:
            assert command[2] in get_commands(), command


def test_the_dispatcher_runs_one_beat():
    for overlay in OVERLAYS:
        docs = render(overlay)
        dispatcher = one(docs, "Deployment", "cxrq-dispatcher")
        assert dispatcher["spec"]["replicas"] == 1
        assert dispatcher["spec"]["strategy"] == {"type": "Recreate"}
        assert "--no-beat" not in containers(dispatcher, init=False)[0]["command"]
        targets = {
            d["spec"]["scaleTargetRef"]["name"]
            for d in docs
            if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
        }
        assert targets == {"cxrq-worker"}


# --- network ------------------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        ok = ok and labels.get(expr["key"]) in expr["values"]
    return ok


def pod_labels(docs) -> dict[str, dict]:
    return {
        w["metadata"]["labels"]["app.kubernetes.io/component"]: w["spec"]["template"]["metadata"]["labels"]
        for w in workloads(docs)
    }


def admitted(docs, target: dict, port: int) -> set[str]:
    """cxrq components (and outside peers, by description) that the policies let reach a pod with
    `target` labels on `port`."""
    allowed = set()
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], target):
            continue
        for rule in policy["spec"].get("ingress", []):
            if port not in [p["port"] for p in rule.get("ports", [])]:
                continue
            if "from" not in rule:
                allowed.add("anyone")
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    allowed.add(
                        "namespace:" + peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    )
                else:
                    allowed |= {
                        c for c, labels in pod_labels(docs).items() if selects(peer["podSelector"], labels)
                    }
    return allowed


def test_only_the_application_reaches_postgresql_and_redis_and_only_web_and_dicom_are_open():
    docs = render("cpu")
    deny = one(docs, "NetworkPolicy", "cxrq-default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    postgresql = {"app.kubernetes.io/name": "postgresql"}
    redis = {"app.kubernetes.io/name": "redis"}
    assert admitted(docs, postgresql, 5432) == APP_COMPONENTS | {"namespace:keda"}
    assert admitted(docs, redis, 6379) == APP_COMPONENTS - {"migrate"}
    labels = pod_labels(docs)
    assert admitted(docs, labels["web"], 8000) == {"anyone"}
    assert admitted(docs, labels["worker"], 9808) == {"namespace:monitoring"}
    assert admitted(docs, labels["dispatcher"], 8000) == set()
    assert admitted(docs, labels["dicom"], 11112) == {"anyone"}
    assert admitted(docs, labels["dicom"], 8000) == admitted(docs, labels["web"], 11112) == set()
    # Every component's own egress lets it open those connections.
    egress = one(docs, "NetworkPolicy", "cxrq-datastore-egress")["spec"]
    assert {c for c, lab in labels.items() if selects(egress["podSelector"], lab)} == APP_COMPONENTS
    assert {p["port"] for rule in egress["egress"] for p in rule["ports"]} == {5432, 6379}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_budgets_select_their_pods(overlay):
    docs = render(overlay)
    labels = pod_labels(docs)
    service = one(docs, "Service", "cxrq-web")
    assert [
        c for c, lab in labels.items() if all(lab.get(k) == v for k, v in service["spec"]["selector"].items())
    ] == ["web"]
    budgets = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert [c for c, lab in labels.items() if selects(budgets["cxrq-web"]["selector"], lab)] == ["web"]
    assert budgets["cxrq-web"]["minAvailable"] < one(docs, "Deployment", "cxrq-web")["spec"]["replicas"]
    assert [c for c, lab in labels.items() if selects(budgets["cxrq-worker"]["selector"], lab)] == ["worker"]
    dicom_service = one(docs, "Service", "cxrq-dicom")["spec"]
    assert [
        c for c, lab in labels.items() if all(lab.get(k) == v for k, v in dicom_service["selector"].items())
    ] == ["dicom"]
    assert dicom_service.get("type", "ClusterIP") == "ClusterIP"  # exposed by the site's own overlay
    assert [c for c, lab in labels.items() if selects(budgets["cxrq-dicom"]["selector"], lab)] == ["dicom"]
    assert budgets["cxrq-dicom"]["minAvailable"] < one(docs, "Deployment", "cxrq-dicom")["spec"]["replicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dicom_service_port_is_the_one_the_receiver_listens_on(overlay):
    """The Service's port, the container port it targets, the port run_dicom listens on
    (CXRQ_DICOM_PORT as the container sets it, else the settings' default), the probes' and the
    ingress policy's: one port. And the receiver listens on every address, not loopback."""
    docs = render(overlay)
    dicom = one(docs, "Deployment", "cxrq-dicom")
    container = containers(dicom, init=False)[0]
    env = effective_env(docs, container)
    listens = int(env.get("CXRQ_DICOM_PORT", settings_default("CXRQ_DICOM_PORT")))
    assert env.get("CXRQ_DICOM_BIND_ADDRESS", settings_default("CXRQ_DICOM_BIND_ADDRESS")) in (
        "0.0.0.0",
        "::",
    )
    assert "--port" not in container["command"] and "--address" not in container["command"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"dicom": listens}
    (service_port,) = one(docs, "Service", "cxrq-dicom")["spec"]["ports"]
    target = service_port["targetPort"]
    assert service_port["port"] == (ports[target] if isinstance(target, str) else target) == listens
    assert service_port.get("protocol", "TCP") == "TCP"
    # No HTTP in that process: every probe is a TCP connection to that port.
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert set(probe) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"tcpSocket"}, kind
        port = probe["tcpSocket"]["port"]
        assert (ports[port] if isinstance(port, str) else port) == listens, kind
    assert admitted(docs, pod_labels(docs)["dicom"], listens) == {"anyone"}
    assert int(settings_default("CXRQ_DICOM_PORT")) == 11112  # the parser above reads base.py


@pytest.mark.slow
@pytest.mark.django_db
def test_dicom_pod_answers_its_probes_and_stops_within_its_grace(settings, tmp_path):
    """run_dicom with the pod's environment (production settings) opens its port within the
    startup probe's window; a probe's bare connection is no association (the process goes on and
    logs nothing of it); SIGTERM ends it cleanly within terminationGracePeriodSeconds."""
    docs = render("cpu")
    dicom = one(docs, "Deployment", "cxrq-dicom")
    container = containers(dicom, init=False)[0]
    port = free_port()  # the pod's port may be taken on this machine; loopback only
    env = {
        **pod_environments(docs, settings.CELERY_BROKER_URL)(container),
        "CXRQ_DICOM_PORT": str(port),
        "CXRQ_DICOM_BIND_ADDRESS": "127.0.0.1",
    }
    startup = container["startupProbe"]
    log_path = tmp_path / "dicom.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *container["command"][1:]],
            cwd=ROOT,
            env={"PATH": os.environ["PATH"], "HOME": str(ROOT / "var"), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def probe() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=startup["timeoutSeconds"]).close()
        except OSError:
            return False
        return True

    try:
        deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
        while not probe():
            assert proc.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.2)
        while "dicom_listening" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.1)
        before = log_path.read_text()
        assert all(probe() for _ in range(5))
        time.sleep(1)
        assert proc.poll() is None
        assert log_path.read_text() == before  # nothing logged for a probe
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=pod_spec(dicom)["terminationGracePeriodSeconds"]) == 0
        assert time.monotonic() - started < pod_spec(dicom)["terminationGracePeriodSeconds"]
        assert "dicom_stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_gpu_workers_get_a_gpu_and_use_cuda():
    docs = render("gpu")
    worker = one(docs, "Deployment", "cxrq-worker")
    spec, container = pod_spec(worker), containers(worker)[0]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = effective_env(docs, container)
    assert env["CXRQ_DEVICE"] == "cuda" and env["CXRQ_BACKEND"] == "torch"
    cpu = one(render("cpu"), "Deployment", "cxrq-worker")
    assert effective_env(render("cpu"), containers(cpu)[0])["CXRQ_DEVICE"] == "cpu"
    assert (
        "nodeSelector" not in pod_spec(cpu)
        and "nvidia.com/gpu" not in containers(cpu)[0]["resources"]["limits"]
    )
    # Everything but the workers and their scaling is the CPU overlay's.
    rest = lambda ds: [d for d in ds if d["metadata"]["name"] != "cxrq-worker"]  # noqa: E731
    assert rest(docs) == rest(render("cpu"))
