"""Backends against torch on every sample image, op_norm outside the graph, the ONNX export cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchxrayvision as xrv

from tests.factories import DATA, sample_bytes
from worker.runtime import export, fallback
from worker.runtime.backends import (
    BF16,
    FP16,
    Head,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    Stage,
    TorchBackend,
    op_threshs_of,
    openvino_fp32,
    openvino_supports_bf16,
    probabilities,
)
from worker.runtime.preprocess import preprocess
from worker.runtime.weights import file_sha256, new_densenet

SAMPLES = sorted(p.name for p in DATA.iterdir() if p.suffix.lower() in (".png", ".jpg", ".dcm"))
PARITY = 1e-4  # max |dprob| of an fp32 backend against torch
FAST_BOUND = 0.05  # what bf16 may move the fallback model's probabilities by


@pytest.fixture(scope="module")
def model(runtime) -> torch.nn.Module:
    from django.conf import settings

    m = new_densenet()
    m.load_state_dict(torch.load(fallback.cached_path(settings.MODEL_CACHE_DIR), weights_only=True))
    return m.eval()


@pytest.fixture(scope="module")
def onnx_files(model, runtime) -> dict[str, Path]:
    from django.conf import settings

    files, _ = export.ensure_exported(
        model, weights_sha256=runtime.weights_sha256, cache_dir=settings.MODEL_CACHE_DIR
    )
    return files


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.stack([preprocess(sample_bytes(n)) for n in SAMPLES])


@pytest.fixture(scope="module")
def torch_probs(model, batch) -> np.ndarray:
    """torchxrayvision's own forward pass (op_norm with its boolean masks)."""
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def test_op_norm_outside_the_graph_equals_torchxrayvision(model):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(64, 18)).astype(np.float32)
    threshs = op_threshs_of(model).copy()
    threshs[[2, 7]] = np.nan  # labels without an operating point stay at 0.5
    want = xrv.models.op_norm(torch.sigmoid(torch.from_numpy(logits)), torch.from_numpy(threshs)).numpy()
    got = probabilities(logits, threshs)
    assert np.abs(got - want).max() < 1e-6
    assert (got[:, [2, 7]] == 0.5).all()


def test_control_two_samples_differ_by_far_more_than_the_parity_bound(torch_probs):
    assert np.abs(torch_probs[0] - torch_probs[1]).max() > 100 * PARITY


def test_onnxruntime_matches_torch_on_every_sample(onnx_files, model, batch, torch_probs):
    backend = OnnxRuntimeBackend(onnx_files["logits"], op_threshs_of(model), threads=2)
    got = np.concatenate([backend.predict(batch[:5]), backend.predict(batch[5:])])  # two batch sizes
    assert (backend.name, backend.precision) == ("onnxruntime", "fp32")
    assert np.abs(got - torch_probs).max() <= PARITY


def test_openvino_fp32_matches_torch_on_every_sample(onnx_files, model, batch, torch_probs):
    backend = openvino_fp32(onnx_files, op_threshs_of(model), threads=2)
    assert (backend.name, backend.precision) == ("openvino", "fp32")
    assert np.abs(backend.predict(batch) - torch_probs).max() <= PARITY


def test_torch_backend_channels_last_matches_plain_torch(model, batch, torch_probs):
    backend = TorchBackend(new_densenet_like(model))
    assert np.abs(backend.predict(batch) - torch_probs).max() <= PARITY


@pytest.mark.skipif(not openvino_supports_bf16(), reason="this CPU has no bf16 instructions")
def test_openvino_bf16_is_bounded_and_says_so(onnx_files, model, batch, torch_probs):
    backend = OpenVinoBackend(
        [Stage(onnx_files["stem"], "f32"), Stage(onnx_files["body"], "bf16")],
        op_threshs_of(model),
        threads=2,
        precision=BF16,
        head=Head(model),
    )
    assert (backend.name, backend.precision) == ("openvino", "bf16")
    diff = np.abs(backend.predict(batch) - torch_probs)
    assert diff.max() <= FAST_BOUND
    assert diff.max() > 1e-5  # it is not fp32 under another name


def test_torch_bf16_on_the_cpu_is_bounded(model, batch, torch_probs):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no bf16 on this CPU")
    backend = TorchBackend(new_densenet_like(model), precision=BF16)
    assert np.abs(backend.predict(batch) - torch_probs).max() <= FAST_BOUND


def test_fp16_is_refused_on_the_cpu(model):
    with pytest.raises(ValueError, match="CUDA"):
        TorchBackend(new_densenet_like(model), precision=FP16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_fp32_and_fp16_match_the_cpu(model, batch, torch_probs):
    fp32 = TorchBackend(new_densenet_like(model), device="cuda")
    fp16 = TorchBackend(new_densenet_like(model), device="cuda", precision=FP16)
    assert np.abs(fp32.predict(batch) - torch_probs).max() <= 1e-3  # cuDNN's fp32 (TF32 off by default)
    assert np.abs(fp16.predict(batch) - torch_probs).max() <= FAST_BOUND


def new_densenet_like(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh copy: backends change their module in place (channels_last, device)."""
    m = new_densenet()
    m.load_state_dict(model.state_dict())
    return m.eval()


# --- the export cache ---------------------------------------------------------------------


def test_export_is_cached_by_weights_sha256_and_atomic(tmp_path, model):
    sha = "ab" * 32
    files, export_ms = export.ensure_exported(model, weights_sha256=sha, cache_dir=tmp_path, parts=("stem",))
    assert export_ms > 0
    assert list(files) == ["stem"] and files["stem"].is_file() and sha[:32] in str(files["stem"])
    assert not list(tmp_path.rglob("*.tmp"))  # written to a temporary name, then renamed
    mtime = files["stem"].stat().st_mtime_ns

    again, export_ms = export.ensure_exported(model, weights_sha256=sha, cache_dir=tmp_path, parts=("stem",))
    assert again == files and export_ms == 0.0
    assert files["stem"].stat().st_mtime_ns == mtime
    # Other weights never meet this export.
    assert export.onnx_files(tmp_path, "cd" * 32)["stem"] != files["stem"]


def test_a_damaged_export_is_exported_again(tmp_path, settings, model):
    from worker.runtime.model import BackendFactory, _Loaded

    weights_file = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights_file)
    loaded = _Loaded(new_densenet_like(model), file_sha256(weights_file), "untrained")
    factory = BackendFactory(loaded, threads=1, device="cpu", cache_dir=tmp_path)
    files = factory.onnx_files(("logits",))
    files["logits"].write_bytes(b"half a file")
    factory2 = BackendFactory(loaded, threads=1, device="cpu", cache_dir=tmp_path)
    backend = factory2.exact("onnxruntime")
    x = preprocess(sample_bytes(SAMPLES[0]))[None]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(backend.predict(x) - want).max() <= PARITY


def test_export_refuses_a_graph_that_differs_from_torch(tmp_path, model, monkeypatch):
    def broken(module, probe, path, part):
        raise export.ExportError(f"exported {part} differs")

    monkeypatch.setattr(export, "_check_parity", broken)
    with pytest.raises(export.ExportError):
        export.ensure_exported(model, weights_sha256="ef" * 32, cache_dir=tmp_path, parts=("stem",))
    assert not [p for p in tmp_path.rglob("*.onnx*")]  # nothing half-published
