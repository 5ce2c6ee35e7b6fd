"""The model's per-label operating points, for the chart.

torchxrayvision ships one operating threshold per label with each model
(`model_urls["densenet121-res224-all"]["op_threshs"]` in torchxrayvision/models.py): the sigmoid
output at which that label was judged positive on its validation data. The backend records none
of its own, so these are read from the installed package's source, parsed (ast), never imported:
importing torchxrayvision imports torch, which the web process never does.

The probabilities a result holds are *after* torchxrayvision's op_norm (worker/runtime/backends.py
`probabilities`): each label's output is rescaled piecewise-linearly so that its operating point
lands on 0.5. So on the chart, whose scale is the stored probability, every label that has an
operating point has it at 0.5; a label without one (NaN) is always 0.5 and has no mark. The raw
threshold is shown beside each value for the record.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import math
import threading
from pathlib import Path

from backend.jobs.model_identity import LABELS, MODEL_NAME

logger = logging.getLogger(__name__)

# Where op_norm puts every operating point on the stored probabilities' scale.
CALIBRATED_OPERATING_POINT = 0.5
# The first read is made once, under this lock: two threads of a web process may ask at once, and
# ast.parse from two threads at the same time fails on Python 3.11 ("AST constructor recursion
# depth mismatch"). Later calls are a cache look-up.
_FIRST_READ = threading.Lock()


def source_path() -> Path | None:
    """torchxrayvision/models.py of the installed package (found, not imported)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models.py"
    return path if path.is_file() else None


def _number(node: ast.expr) -> float:
    """A literal number, or np.nan / float('nan') as NaN."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_number(node.operand)
    if isinstance(node, ast.Attribute) and node.attr == "nan":
        return math.nan
    raise ValueError(f"not a number: {ast.dump(node)[:80]}")


def parse_model_urls(source: str) -> dict[str, dict]:
    """The literal entries of `model_urls[...] = {...}` (and aliases `model_urls[a] = model_urls[b]`)
    as {name: {"labels": [...], "op_threshs": [...]}}."""
    entries: dict[str, dict] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (
            isinstance(target, ast.Subscript)
            and isinstance(target.value, ast.Name)
            and target.value.id == "model_urls"
            and isinstance(target.slice, ast.Constant)
        ):
            continue
        name = target.slice.value
        value = node.value
        if isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Constant):
            if value.slice.value in entries:
                entries[name] = entries[value.slice.value]
            continue
        if not isinstance(value, ast.Dict):
            continue
        entry: dict = {}
        for key, item in zip(value.keys, value.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "labels" and isinstance(item, ast.List):
                entry["labels"] = [ast.literal_eval(e) for e in item.elts]
            elif isinstance(key, ast.Constant) and key.value == "op_threshs" and isinstance(item, ast.List):
                entry["op_threshs"] = [_number(e) for e in item.elts]
        entries[name] = entry
    return entries


def operating_points(model: str = MODEL_NAME) -> dict[str, float | None]:
    """{label: raw operating threshold, or None where the model has none}, for the model's labels;
    empty when the package or the entry cannot be found (the chart then says so)."""
    with _FIRST_READ:
        return _operating_points(model)


@functools.cache
def _operating_points(model: str) -> dict[str, float | None]:
    path = source_path()
    if path is None:
        logger.warning("event=operating_points_unavailable reason=torchxrayvision_not_installed")
        return {}
    try:
        entry = parse_model_urls(path.read_text(encoding="utf-8")).get(model, {})
        labels, thresholds = entry["labels"], entry["op_threshs"]
    except (OSError, SyntaxError, ValueError, KeyError):
        logger.warning("event=operating_points_unavailable reason=unreadable path=%s", path, exc_info=True)
        return {}
    if tuple(labels) != LABELS or len(thresholds) != len(labels):
        logger.warning("event=operating_points_unavailable reason=labels_differ path=%s", path)
        return {}
    return {label: (None if math.isnan(t) else t) for label, t in zip(labels, thresholds, strict=True)}
