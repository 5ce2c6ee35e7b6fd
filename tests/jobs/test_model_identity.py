"""The model version: from settings alone, so the web and the worker started with one environment agree."""

from __future__ import annotations

import pytest

from backend.jobs.model_identity import OFFICIAL_WEIGHTS_FILENAME, current_identity, current_model_version
from tests.factories import png_bytes, post_image
from worker.runtime import weights

pytestmark = pytest.mark.django_db


def test_weights_in_the_cache_without_a_checksum_change_nothing(api, settings, tmp_path, monkeypatch, caplog):
    """Official weights lie in torchxrayvision's cache but no sha256 is configured (the default
    settings): uploads are accepted (no 500), and the worker runs the same model version the
    web queues for: the fallback, saying why it did not use the file."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cached = tmp_path / ".torchxrayvision" / "models_data" / OFFICIAL_WEIGHTS_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights nobody vouched for")

    response = post_image(api, png_bytes(seed=1))
    assert response.status_code == 202, response.content
    assert response.json()["model_version"] == current_model_version()
    assert "untrained" in current_model_version()
    assert api.get("/api/v1/health").status_code == 200

    identity = current_identity()
    assert weights.official_weights_path(identity, configured_path="", allow_fallback=True) is None
    assert "event=weights_ignored" in caplog.text and "reason=no_sha256_configured" in caplog.text


def test_a_configured_checksum_names_the_weights_and_a_missing_file_stops_the_worker(settings, tmp_path):
    settings.MODEL_WEIGHTS_SHA256 = "ab" * 32
    assert current_model_version().startswith("densenet121-res224-all@abababababababab+")
    with pytest.raises(weights.WeightsError, match="no weights file"):
        weights.official_weights_path(
            current_identity(), configured_path=str(tmp_path / "missing.pt"), allow_fallback=True
        )


def test_every_option_that_changes_results_changes_the_version(settings):
    base = current_model_version()
    settings.DICOM_APPLY_VOI_LUT = True
    voi = current_model_version()
    settings.PRECISION = "fast"
    fast = current_model_version()
    assert len({base, voi, fast}) == 3 and fast.endswith("+voilut+fast")
