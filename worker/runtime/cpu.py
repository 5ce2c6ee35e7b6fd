"""Which CPU this is, as far as the engine's speed is concerned: the signature a tuned configuration
is keyed by (worker/runtime/tuned.py), so that settings measured on one CPU are never applied to
another.

The signature is the CPU's model name, its core count and the instruction-set flags that change
which precision and batch size are fastest: AVX2/FMA (every modern x86), AVX-512, its bf16 and
VNNI extensions, AVX-VNNI, and AMX. Two machines of the same cloud class can differ in exactly
these (issue #17: an AVX2-only host and an AVX-512/bf16 one, both "2 cores").

Read from /proc/cpuinfo (CXRQ_CPUINFO names another file: tests fake a CPU with it).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

# The flags that decide the engine's fastest settings, in the order they are written.
FLAGS_THAT_MATTER = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
)


@dataclass(frozen=True)
class CpuSignature:
    model: str
    cores: int
    flags: tuple[str, ...]

    @property
    def key(self) -> str:
        """`<model> | <n> cores | <flag>+<flag>...`: readable in the tuned file, exact to compare."""
        return f"{self.model} | {self.cores} cores | {'+'.join(self.flags) or 'no-simd-flags'}"

    def as_dict(self) -> dict:
        return {"model": self.model, "cores": self.cores, "flags": list(self.flags), "key": self.key}


def parse_cpuinfo(text: str, *, cores: int) -> CpuSignature:
    model, flags = "", set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and not model:
            model = value.strip()
        elif name in ("flags", "Features") and not flags:
            flags = set(value.split())
    return CpuSignature(
        model=model or platform.processor() or platform.machine(),
        cores=cores,
        flags=tuple(f for f in FLAGS_THAT_MATTER if f in flags),
    )


def current() -> CpuSignature:
    """This machine's signature (the cores this process may use, as os.cpu_count() counts them)."""
    path = Path(os.environ.get("CXRQ_CPUINFO") or "/proc/cpuinfo")
    try:
        text = path.read_text()
    except OSError:
        text = ""
    return parse_cpuinfo(text, cores=os.cpu_count() or 1)
