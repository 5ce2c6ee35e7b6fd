"""Inference backends behind one small interface; which one runs is configuration.

Every backend takes a (N, 1, 224, 224) float32 batch and returns (N, labels)
probabilities after torchxrayvision's op_norm, and says what it is (`name`)
and at which numeric precision it ran (`precision`).

- torch: eager, channels_last, inference_mode; fp32 on the CPU, and on CUDA
  fp32 or fp16 (the fast precision there).
- onnxruntime: the model exported to ONNX (worker/runtime/export.py), fp32.
- openvino: the same ONNX files; fp32, bf16 (mixed with fp32 slices) or int8 (quantized,
  worker/runtime/quantize.py) as the fast precisions, chosen and guarded at start
  (worker/runtime/ladder.py).

The exported graphs end at the classifier's logits: sigmoid and op_norm run
here in numpy (`probabilities`). torchxrayvision's op_norm writes through
boolean masks, which exports as NonZero/ScatterND; the same arithmetic as one
`np.where` is exact and backend-independent.

Reduced precision keeps the stem (conv0 + norm0 + pool0) and the head (norm5,
ReLU, pooling, classifier) in fp32 and runs only the dense blocks in bf16/fp16:
conv0 sees raw [-1024, 1024] pixels whose large common level norm0 then
subtracts, and the classifier sums 1024 features, so a bf16 rounding at either
end is amplified; measured on the fallback model, a bf16 conv0 alone moves the
probabilities by up to 0.03, every dense block in bf16 together by about 0.01
(docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

logger = logging.getLogger(__name__)

FP32 = "fp32"
BF16 = "bf16"
FP16 = "fp16"
INT8 = "int8"


class Backend(Protocol):
    name: str
    precision: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, 224, 224) float32 -> (N, labels) probabilities after op_norm."""
        ...


def probabilities(logits: np.ndarray, op_threshs: np.ndarray) -> np.ndarray:
    """sigmoid, then xrv.models.op_norm, in float32 like torch.

    Below its operating threshold t a probability p maps to p / (2t), above it to
    1 - (1 - p) / (2 (1 - t)); a label without a threshold (NaN) is 0.5.
    """
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))
    t = op_threshs.astype(np.float32)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(p < t, p / (t * 2), 1.0 - (1.0 - p) / ((1 - t) * 2))
    return np.where(np.isnan(t), np.float32(0.5), scaled).astype(np.float32)


# --- the DenseNet121 cut into the parts the backends run --------------------------------


STEM = ("conv0", "norm0", "relu0", "pool0")
BODY = (
    "denseblock1",
    "transition1",
    "denseblock2",
    "transition2",
    "denseblock3",
    "transition3",
    "denseblock4",
)


def _features(model: torch.nn.Module, names: tuple[str, ...]) -> torch.nn.Sequential:
    children = dict(model.features.named_children())
    return torch.nn.Sequential(*(children[n] for n in names))


class Logits(torch.nn.Module):
    """torchxrayvision's DenseNet up to the classifier's logits (no sigmoid, no op_norm)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.classifier(self.model.features2(x))


def stem_module(model: torch.nn.Module) -> torch.nn.Sequential:
    return _features(model, STEM)


def body_module(model: torch.nn.Module) -> torch.nn.Sequential:
    return _features(model, BODY)


class Head:
    """norm5 -> ReLU -> global average pool -> classifier, in float32 numpy."""

    def __init__(self, model: torch.nn.Module):
        norm5 = dict(model.features.named_children())["norm5"]
        with torch.no_grad():
            scale = norm5.weight / torch.sqrt(norm5.running_var + norm5.eps)
            shift = norm5.bias - norm5.running_mean * scale
        self.scale = scale.numpy().astype(np.float32)[None, :, None, None]
        self.shift = shift.numpy().astype(np.float32)[None, :, None, None]
        self.weight_t = model.classifier.weight.detach().numpy().T.astype(np.float32).copy()
        self.bias = model.classifier.bias.detach().numpy().astype(np.float32)

    def __call__(self, body_out: np.ndarray) -> np.ndarray:
        features = np.maximum(body_out * self.scale + self.shift, 0).mean(axis=(2, 3), dtype=np.float32)
        return features @ self.weight_t + self.bias


def op_threshs_of(model: torch.nn.Module) -> np.ndarray:
    return model.op_threshs.detach().cpu().numpy().astype(np.float32)


# --- torch ---------------------------------------------------------------------------------


class TorchBackend:
    """Eager torch: inference_mode, channels_last; CPU fp32, or CUDA fp32/fp16.

    On the CPU in fp32 this is torchxrayvision's forward pass itself, op_norm included.
    Reduced precision (fp16 on CUDA) runs the dense blocks under autocast and the
    stem and head in fp32 (module docstring).
    """

    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        channels_last: bool = True,
        device: str = "cpu",
        precision: str = FP32,
    ):
        if precision not in (FP32, FP16, BF16):
            raise ValueError(f"unknown precision {precision!r}")
        if precision == FP16 and device == "cpu":
            raise ValueError("fp16 is for CUDA; on the CPU use bf16")
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.op_threshs = op_threshs_of(model)
        self._autocast_dtype = {BF16: torch.bfloat16, FP16: torch.float16}.get(precision)
        if self._autocast_dtype is not None:
            self.stem, self.body = stem_module(self.model), body_module(self.model)
            self.head = Head(model.cpu()) if device == "cpu" else Head(_cpu_copy(model))

    def _input(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = self._input(batch)
        with torch.inference_mode():
            if self._autocast_dtype is None:
                return self.model(x).float().cpu().numpy()
            stem = self.stem(x)
            with torch.autocast(self.device.type, dtype=self._autocast_dtype):
                body = self.body(stem)
            body_out = body.float().cpu().numpy()
        return probabilities(self.head(body_out), self.op_threshs)


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


# --- ONNX Runtime ---------------------------------------------------------------------------


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU, fp32: the exported logits graph, op_norm in numpy."""

    name = "onnxruntime"
    precision = FP32

    def __init__(self, logits_onnx: Path, op_threshs: np.ndarray, *, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spinning: preprocessing threads run
        # beside inference and need those cores (docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(logits_onnx), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.op_threshs = op_threshs

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: x})
        return probabilities(logits, self.op_threshs)


# --- OpenVINO -------------------------------------------------------------------------------


def openvino_capabilities() -> frozenset[str]:
    """What OpenVINO's CPU plugin says it can run on this CPU (`BF16`, `INT8`, `FP32`, ...)."""
    import openvino as ov

    return frozenset(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_supports_bf16() -> bool:
    return "BF16" in openvino_capabilities()


@dataclass(frozen=True)
class Stage:
    """One compiled model in an OpenVINO chain: an ONNX or IR file and the precision it runs at."""

    model: Path
    hint: str = "f32"  # OpenVINO's INFERENCE_PRECISION_HINT: f32 or bf16


class OpenVinoBackend:
    """OpenVINO on the CPU: a chain of compiled models, each at its own precision.

    fp32: the logits graph. bf16: the feature slices, the sensitive ones in f32 (by default the
    stem), then the numpy head. int8: a quantized IR (worker/runtime/quantize.py) compiled with the
    f32 hint, so that what was left unquantized runs in fp32 and not in OpenVINO's default bf16.
    Without a head the last stage's output is the logits.
    """

    name = "openvino"

    def __init__(
        self,
        stages: Sequence[Stage],
        op_threshs: np.ndarray,
        *,
        threads: int,
        precision: str = FP32,
        head: Head | None = None,
        compile_cache_dir: Path | None = None,
        detail: str = "",
    ):
        import openvino as ov

        if precision not in (FP32, BF16, INT8):
            raise ValueError(f"unknown precision {precision!r}")
        if not stages:
            raise ValueError("an OpenVINO backend needs at least one stage")
        self.precision = precision
        self.detail = detail
        self.op_threshs = op_threshs
        self.head = head
        core = ov.Core()
        if compile_cache_dir is not None:
            # Compiled blobs are cached next to the ONNX files: a restart skips compilation.
            core.set_property({"CACHE_DIR": str(compile_cache_dir)})
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self._requests = [
            core.compile_model(
                str(stage.model), "CPU", config | {"INFERENCE_PRECISION_HINT": stage.hint}
            ).create_infer_request()
            for stage in stages
        ]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(batch, dtype=np.float32)
        for request in self._requests:
            out = request.infer({0: out})[0]
        logits = self.head(np.asarray(out, dtype=np.float32)) if self.head is not None else out
        return probabilities(np.asarray(logits), self.op_threshs)


def openvino_fp32(
    onnx_files: dict[str, Path],
    op_threshs: np.ndarray,
    *,
    threads: int,
    compile_cache_dir: Path | None = None,
) -> OpenVinoBackend:
    """The fp32 backend: the whole logits graph in one compiled model."""
    return OpenVinoBackend(
        [Stage(onnx_files["logits"])], op_threshs, threads=threads, compile_cache_dir=compile_cache_dir
    )
