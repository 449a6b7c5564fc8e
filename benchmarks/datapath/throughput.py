"""The throughput benchmark's measurements (`benchmarks/bench_throughput.py` is the entry point): a budget of
training steps timed for any loop, the plain PyTorch loop, our pipeline's steps, and the device's matmul peak."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from fmnist.training.devices import sync
from fmnist.training.runtime import Runtime
from fmnist.training.steps import StepRules

from .paths import Batch
from .timing import run_steps

PROBE_STEPS = 3  # timed first, to size the rest of a --seconds budget
MAX_STEPS = 5000  # a small network on a fast GPU would otherwise run tens of thousands of steps for nothing
PLAIN_LR, PLAIN_MOMENTUM = 0.01, 0.9  # what a PyTorch tutorial's SGD uses

Loop = Callable[[Iterator[Batch], int], int]  # trains on the next n batches of an iterator, returns their images


@dataclass(frozen=True)
class Budget:
    seconds: float  # per measurement, when steps is None
    steps: int | None  # exactly this many timed steps per measurement
    warmup: int  # untimed steps first


@dataclass(frozen=True)
class Measured:
    seconds: float
    images: int
    steps: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def __add__(self, other: Measured) -> Measured:
        return Measured(self.seconds + other.seconds, self.images + other.images, self.steps + other.steps)

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "images": self.images, "steps": self.steps, "images_per_s": self.rate}


def timed(loop: Loop, batches: Iterator[Batch], n: int, device: torch.device) -> Measured:
    sync(device)
    start = time.perf_counter()
    images = loop(batches, n)
    sync(device)
    return Measured(time.perf_counter() - start, images, n)


def measure(loop: Loop, batches: Iterator[Batch], budget: Budget, device: torch.device) -> Measured:
    """--steps steps, or as many as fill --seconds (sized from a short probe, which counts too)."""
    if budget.steps is not None:
        return timed(loop, batches, budget.steps, device)
    probe = timed(loop, batches, PROBE_STEPS, device)
    more = min(MAX_STEPS, math.floor((budget.seconds - probe.seconds) / (probe.seconds / PROBE_STEPS)))
    return probe + timed(loop, batches, more, device) if more > 0 else probe


def warm_up(loop: Loop, batches: Iterator[Batch], steps: int, device: torch.device,
            last_size: int | None = None) -> float:
    """`steps` steps, then one on an epoch's last batch size if given, so that a compiled network meets both
    shapes (and recompiles) here rather than in the timed steps; returns the seconds it took."""
    sync(device)
    start = time.perf_counter()
    loop(batches, steps)
    if last_size is not None:
        loop(iter([batch_of(batches, last_size)]), 1)
    sync(device)
    return time.perf_counter() - start


def last_batch_size(images: int, batch_size: int) -> int | None:
    """The size of an epoch's last batch in `train_batches` where it differs from the others (a last batch of one
    joins the one before); None where every batch of an epoch has one size."""
    rest = images % batch_size
    if rest == 0 or images <= batch_size + 1:
        return None
    return batch_size + 1 if rest == 1 else rest


def batch_of(batches: Iterator[Batch], size: int) -> Batch:
    x, y = next(batches)
    while len(y) < size:
        x2, y2 = next(batches)
        x, y = torch.cat([x, x2]), torch.cat([y, y2])
    return x[:size], y[:size]


# ----------------------------------------------------------------------------- the two loops

def plain_loop(model: nn.Module) -> Loop:
    """The loop a PyTorch user writes: fp32, eager, SGD, over batches that already went `.to(device,
    non_blocking=True)`. No `loss.item()` per step, which many such loops have: it makes the host wait."""
    optimizer = torch.optim.SGD(model.parameters(), lr=PLAIN_LR, momentum=PLAIN_MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def loop(batches: Iterator[Batch], n: int) -> int:
        images = 0
        for x, y in islice(batches, n):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            images += len(y)
        return images
    return loop


def our_loop(net: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime, rules: StepRules) -> Loop:
    """The pipeline's `train_steps` (autocast, channels_last, the compiled module if any, the recipe's rules)."""
    return lambda batches, n: run_steps(net, optimizer, runtime, batches, n, rules)[2]


# ----------------------------------------------------------------------------- the device's peak

def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 7) -> float:
    """Median TFLOP/s of size x size matmuls on random data: what the device reaches on the friendliest work."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty_like(a)
    inner = 10 if device.type == "cuda" else 1  # a GPU matmul is too short to time alone against a host clock
    for _ in range(2):
        torch.mm(a, b, out=out)
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        sync(device)
        seconds.append((time.perf_counter() - start) / inner)
    return 2 * size ** 3 / statistics.median(seconds) / 1e12
