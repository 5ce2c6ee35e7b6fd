"""The model runtime against a torchxrayvision reference computed here, and the fallback's health."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchxrayvision as xrv

from backend.jobs.model_identity import LABELS, MODEL_NAME
from tests.factories import DATA, PNG_JPEG_SAMPLES, ROOT, phi_key
from tests.worker.runtime.references import reference_input, reference_model
from worker.runtime import fallback, weights
from worker.runtime.preprocess import preprocess


@pytest.fixture(scope="module")
def reference(runtime, settings_module=None):
    from django.conf import settings

    model = reference_model(fallback.cached_path(settings.MODEL_CACHE_DIR))
    with torch.no_grad():
        probs = {
            name: model(torch.from_numpy(reference_input(DATA / name))[None]).numpy()[0]
            for name in PNG_JPEG_SAMPLES
        }
    return probs


def test_runtime_matches_torchxrayvision_reference(runtime, reference):
    batch = np.stack([preprocess((DATA / n).read_bytes()) for n in PNG_JPEG_SAMPLES])
    ours = runtime.predict(batch)
    diffs = [np.abs(ours[i] - reference[n]).max() for i, n in enumerate(PNG_JPEG_SAMPLES)]
    assert max(diffs) <= 1e-4, dict(zip(PNG_JPEG_SAMPLES, diffs, strict=True))
    # The bound means something: two different X-rays differ by far more.
    a, b = reference[PNG_JPEG_SAMPLES[0]], reference[PNG_JPEG_SAMPLES[1]]
    assert np.abs(a - b).max() > 100 * 1e-4


def test_preprocessing_matches_reference_pipeline(reference):
    for name in PNG_JPEG_SAMPLES:
        ours = preprocess((DATA / name).read_bytes())
        ref = reference_input(DATA / name)
        assert ours.shape == ref.shape == (1, 224, 224)
        assert ours.dtype == np.float32
        assert np.abs(ours - ref).max() <= 0.05, name  # pixel units of [-1024, 1024]


def test_fallback_is_not_degenerate(runtime, reference):
    probs = np.stack(list(reference.values()))
    assert probs.shape == (len(PNG_JPEG_SAMPLES), 18)
    assert (probs > 0.01).all() and (probs < 0.99).all()  # nothing saturated
    assert probs.std(0).min() >= 0.03  # every label varies across X-rays
    pairwise = [np.abs(probs[i] - probs[j]).max() for i in range(len(probs)) for j in range(i)]
    assert min(pairwise) >= 0.05
    # An inverted image differs by far more than two X-rays do.
    x = preprocess((DATA / PNG_JPEG_SAMPLES[0]).read_bytes())
    inverted = runtime.predict(np.stack([x, -x]))
    assert np.abs(inverted[0] - inverted[1]).max() > 0.1


def test_fallback_weights_file_is_deterministic(tmp_path, runtime):
    from django.conf import settings

    model_a = fallback.build(settings.MODEL_CALIBRATION_DIR)
    torch.save(model_a.state_dict(), tmp_path / "a.pt")
    cached = fallback.cached_path(settings.MODEL_CACHE_DIR)
    b = torch.load(cached, weights_only=True)
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, b[key]), key
    assert runtime.weights == "untrained"
    assert runtime.weights_sha256 == weights.file_sha256(cached)
    assert runtime.provenance()["weights"] == "untrained"
    assert runtime.provenance()["torchxrayvision"] == xrv.__version__


def test_official_loader_verifies_sha256_before_unpickling(tmp_path, runtime):
    """A file in torchxrayvision's release format (a pickled nn.Module) loads only with its checksum."""
    from django.conf import settings

    model = reference_model(fallback.cached_path(settings.MODEL_CACHE_DIR))
    official = tmp_path / "official.pt"
    torch.save(model, official)  # the release files are whole pickled modules
    sha = weights.file_sha256(official)

    loaded = weights.load_official(official, sha)
    x = torch.from_numpy(reference_input(DATA / PNG_JPEG_SAMPLES[0]))[None]
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
    assert loaded.targets == xrv.models.model_urls[MODEL_NAME]["labels"] == list(LABELS)

    # A tampered file: refused by checksum, and never unpickled (the payload would leave a mark).
    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(weights.WeightsError, match="sha256 mismatch"):
        weights.load_official(evil, sha)
    assert not marker.exists()


def _settings_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "DJANGO_SETTINGS_MODULE": "backend.settings.production",
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_verified_weights(tmp_path):
    safe = {
        "DJANGO_SECRET_KEY": "x" * 50,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CXRQ_PUBLIC_URL": "https://cxrq.example.org",
        "CXRQ_PHI_KEY": phi_key(),
        "HOME": str(tmp_path),  # no torchxrayvision cache here
    }
    no_public_url = _settings_check(safe | {"CXRQ_PUBLIC_URL": "http://cxrq.example.org"})
    assert no_public_url.returncode != 0 and "CXRQ_PUBLIC_URL" in no_public_url.stderr
    no_weights = _settings_check(safe)
    assert no_weights.returncode != 0
    assert "no model weights" in no_weights.stderr

    weights_file = tmp_path / "w.pt"
    weights_file.write_bytes(b"not really weights")
    no_sha = _settings_check(safe | {"CXRQ_MODEL_WEIGHTS_PATH": str(weights_file)})
    assert no_sha.returncode != 0 and "CXRQ_MODEL_WEIGHTS_SHA256" in no_sha.stderr

    ok = _settings_check(
        safe | {"CXRQ_MODEL_WEIGHTS_PATH": str(weights_file), "CXRQ_MODEL_WEIGHTS_SHA256": "a" * 64}
    )
    assert ok.returncode == 0, ok.stderr
    assert "started" in ok.stdout

    dev_key = _settings_check(safe | {"DJANGO_SECRET_KEY": "dev-only-insecure-key-change-me"})
    assert dev_key.returncode != 0 and "DJANGO_SECRET_KEY" in dev_key.stderr
    sqlite = _settings_check(safe | {"DATABASE_URL": "sqlite:///x.db"})
    assert sqlite.returncode != 0 and "PostgreSQL" in sqlite.stderr


def test_worker_refuses_weights_with_wrong_checksum(tmp_path, settings):
    """A worker configured with weights whose sha256 does not match never starts."""
    from worker.runtime.model import load_runtime

    bad = tmp_path / "w.pt"
    bad.write_bytes(b"tampered")
    settings.MODEL_WEIGHTS_PATH = str(bad)
    settings.MODEL_WEIGHTS_SHA256 = "0" * 64
    with pytest.raises(weights.WeightsError):
        load_runtime()
