"""Which device runs, and waiting for it before reading a clock."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from fmnist.core.errors import DeviceError

# CPU flags of native bf16 arithmetic: x86's AVX512-BF16 and AMX, Arm's BF16 extension. Without them
# PyTorch emulates bf16, which is slower than fp32.
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (read from the kernel's CPU flags; False where unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and NATIVE_BF16_FLAGS & set(value.split()):
            return True
    return False


def has_native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()
