"""What a row says about where it was measured: the git commit, the CPU's model and speed flags, the device."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# The CPU features that decide how fast the training step is: wide vectors, and native bf16 (AVX512-BF16, AMX).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and which of SPEED_FLAGS it has, from /proc/cpuinfo (elsewhere: the platform's
    word for the processor, flags unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return model, [f for f in SPEED_FLAGS if f in flags]


def device_name(device: torch.device) -> str:
    """What decides a measured speed: the GPU's name, or the CPU's model, its speed flags and the threads
    used. Timing rows are keyed by it, so another machine measures itself instead of reusing these."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model, flags = cpu_model_and_flags()
    return f"cpu: {model} ({' '.join(flags) or 'no avx2'}; {torch.get_num_threads()} threads)"
