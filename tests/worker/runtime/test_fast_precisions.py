"""The real fast precisions against torchxrayvision's own forward pass, computed here: each is within
the max |dprob| it records, and two different X-rays differ by far more than bf16 moves them. Plus
int8's on-disk cache: quantized once, keyed by weights, recipe, calibration set and CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.factories import sample_bytes
from tests.worker.runtime.references import reference_model
from worker.runtime import fallback, guard, ladder, quantize
from worker.runtime.preprocess import preprocess

PARITY = 1e-4  # an fp32 backend against torch
IMAGES = ["00000001_000.png", "tb0005.png", "h0001.png", "00027426_000.png", "tb0007.png"]


@pytest.fixture(scope="module")
def factory(runtime):
    from django.conf import settings

    from backend.jobs.model_identity import current_identity
    from worker.runtime.model import BackendFactory, _load_weights

    return BackendFactory(
        _load_weights(current_identity()), threads=2, device="cpu", cache_dir=settings.MODEL_CACHE_DIR
    )


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.stack([preprocess(sample_bytes(name)) for name in IMAGES])


@pytest.fixture(scope="module")
def torch_probs(runtime, inputs) -> np.ndarray:
    """torchxrayvision's DenseNet with the fallback weights, op_norm included, in fp32."""
    from django.conf import settings

    model = reference_model(fallback.cached_path(settings.MODEL_CACHE_DIR))
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


def test_bf16_is_within_its_recorded_diff_of_torch_and_far_from_another_xray(factory, inputs, torch_probs):
    if ladder.capabilities().bf16():
        pytest.skip(f"no bf16 here: {ladder.capabilities().bf16()}")
    from worker.runtime.model import BF16_SPLITS

    exact = factory.exact("onnxruntime")
    for split in BF16_SPLITS:
        bf16 = factory.bf16(split)
        recorded = guard.check_fast(
            images=[sample_bytes(n) for n in IMAGES],
            exact=(preprocess, exact.predict),
            fast=(preprocess, bf16.predict),
            limit=1.0,
            batch_size=4,
        ).max_abs_diff
        got = bf16.predict(inputs)
        diff = float(np.abs(got - torch_probs).max())
        assert diff <= recorded + PARITY, (bf16.detail, diff, recorded)
        assert diff > PARITY  # bf16 indeed, not fp32 under another name
        control = float(np.abs(torch_probs[0] - torch_probs[1]).max())
        assert control > 5 * recorded, (control, recorded)


@pytest.fixture(scope="module")
def int8(factory, inputs, tmp_path_factory):
    """Plain int8 (no time for the sensitivity search: budget 0), quantized into a fresh cache."""
    exact = factory.exact("onnxruntime")
    cache = tmp_path_factory.mktemp("int8-cache")
    kwargs = dict(
        logits_onnx=factory.onnx_files(("logits",))["logits"],
        op_threshs=factory.op_threshs,
        inputs=inputs,
        reference=exact.predict,
        weights_sha256=factory.loaded.sha256,
        cache_dir=cache,
        cpu_key="test cpu | 2 cores | avx2",
        max_drop=0.015,
        budget_seconds=0,
    )
    return quantize.ensure_int8(**kwargs), kwargs


def test_int8_is_within_its_recorded_diff_of_torch(int8, factory, inputs, torch_probs):
    from worker.runtime.backends import INT8, OpenVinoBackend, Stage

    quantized, _ = int8
    assert not quantized.cached and quantized.path.is_file()
    assert quantized.int8_groups == quantize.GROUPS  # budget 0: the plain int8 model, for the record
    backend = OpenVinoBackend([Stage(quantized.path)], factory.op_threshs, threads=2, precision=INT8)
    diff = float(np.abs(backend.predict(inputs) - torch_probs).max())
    assert diff <= quantized.validation_max_abs_diff + PARITY
    assert diff > PARITY  # quantized indeed


def test_int8_is_quantized_once_and_keyed_by_what_it_depends_on(int8, monkeypatch):
    quantized, kwargs = int8

    def must_not_run(**_):
        raise AssertionError("quantized again")

    monkeypatch.setattr(quantize, "_quantize_in_child", must_not_run)
    again = quantize.ensure_int8(**kwargs)
    assert again.cached and again.path == quantized.path and again.key == quantized.key
    assert again.validation_max_abs_diff == quantized.validation_max_abs_diff
    key_args = {k: kwargs[k] for k in ("weights_sha256", "inputs", "cpu_key", "max_drop", "budget_seconds")}
    for change in (
        {"cpu_key": "another cpu | 2 cores | avx2+avx512_vnni"},
        {"weights_sha256": "cd" * 32},
        {"max_drop": 0.01},
        {"inputs": kwargs["inputs"][:2]},
    ):
        assert quantize.cache_key(**(key_args | change)) != quantized.key, change
    # A cache entry from another key is not taken for this one.
    assert quantize._cached(quantized.path.parent, "ef" * 32) is None
