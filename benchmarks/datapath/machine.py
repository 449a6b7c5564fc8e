"""The machine and versions a benchmark ran on. Imports no MLflow: the GPU machines run the benchmarks
without it."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
import torchvision

from fmnist.core.commit import git_commit as commit_of

from .paths import ROOT


def git_commit(root: Path = ROOT) -> str:
    return commit_of(root)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ram_gib() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2 ** 20:.1f} GiB"
    return "unknown"


def os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    return platform.platform()


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def environment(device: torch.device, load_before: str) -> list[tuple[str, str]]:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    else:
        gpu = f"{torch.cuda.get_device_name(0)} (present, not used)" if torch.cuda.is_available() else "none"
    return [
        ("date", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("CPU", f"{cpu_model()}, {cores} cores ({usable} usable by this process)"),
        ("RAM", ram_gib()),
        ("GPU", gpu),
        ("OS", os_name()),
        ("versions", f"Python {platform.python_version()}, torch {torch.__version__}, "
                     f"torchvision {torchvision.__version__}"),
        ("load average (1, 5, 15 min)", f"{load_before} before the run, {load_average()} after "
                                        "(other processes on the cores distort every figure)"),
        ("torch threads", f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"),
        ("device", str(device)),
        ("git commit", git_commit()),
        ("command", f"`{shlex.join(sys.orig_argv)}`"),
    ]


