"""The throughput benchmark's measurements (`benchmarks/bench_throughput.py` is the entry point): a budget of
training steps timed for any loop, the plain PyTorch loop, our pipeline's steps, the device's matmul peak, and
per network (a `Bench`: the command line, the device, the data): its FLOP count, the plain loop's and ours'
images/s and the peak its row is a share of. No MLflow here: the GPU machines have none."""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from torch import nn

from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, train_batches
from fmnist.models import create_model
from fmnist.models.init import init_weights
from fmnist.training.devices import sync
from fmnist.training.flops import training_flops_per_image
from fmnist.training.optim import build_optimizer
from fmnist.training.plan import RunPlan
from fmnist.training.runtime import Runtime, seed_everything
from fmnist.training.steps import StepRules

from .paths import Batch, endless, standard_epochs
from .timing import progress, run_steps

PROBE_STEPS = 3  # timed first, to size the rest of a --seconds budget
MAX_STEPS = 5000  # a small network on a fast GPU would otherwise run tens of thousands of steps for nothing
PLAIN_LR, PLAIN_MOMENTUM = 0.01, 0.9  # what a PyTorch tutorial's SGD uses
NUM_CLASSES = 10

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


# ----------------------------------------------------------------------------- per network

@dataclass
class Bench:
    """What every network's measurements share: the command line, the device, the budget, both paths' data."""
    args: argparse.Namespace
    device: torch.device
    budget: Budget
    workers: int
    root: Path  # holds FashionMNIST/raw/ for torchvision
    data: DeviceDataset  # ours: the training images on the device
    mean: float
    std: float
    peaks: dict[str, dict]  # by dtype: {"tflops", "how"}


def release(device: torch.device) -> None:
    """Give back what a network held, so the next one starts with the device's whole memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def torch_defaults() -> None:
    """What a plain script runs with: none of the pipeline's determinism settings from an earlier network."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = False


def build_network(plan: RunPlan, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(plan.info.name, num_classes=NUM_CLASSES, **plan.model_options)


def count_flops(plan: RunPlan, seed: int) -> dict:
    return {"gflop_per_image": training_flops_per_image(build_network(plan, seed)) / 1e9}


def measure_plain(b: Bench, plan: RunPlan) -> dict:
    torch_defaults()
    model = build_network(plan, b.args.seed).to(b.device)
    epoch = standard_epochs(b.root, b.mean, b.std, None, plan.recipe.batch_size, b.workers, b.device, b.args.seed,
                            augment=False, persistent_workers=True)
    loop = plain_loop(model)
    try:
        with endless(epoch) as batches:
            warm_up(loop, batches, b.budget.warmup, b.device)
            measured = measure(loop, batches, b.budget, b.device)
    finally:
        del model, loop, epoch
        release(b.device)
    progress(f"  {plan.arch}, plain: {measured.rate:,.0f} images/s over {measured.steps} steps")
    return measured.as_dict()


def our_epochs_for(b: Bench, plan: RunPlan) -> Callable:
    """The pipeline's batches for the recipe: its augmentation, its normalisation, its generator's device."""
    mean, std = (b.mean, b.std) if plan.info.input == "standardized" else (0.0, 1.0)
    generator = torch.Generator(device=b.device).manual_seed(plan.seed)
    normalize, augment = Normalizer(mean, std), BatchAugment.from_config(plan.recipe.augment)
    return lambda: train_batches(b.data, plan.recipe.batch_size, generator, normalize, augment)


def measure_ours(b: Bench, plan: RunPlan) -> dict:
    recipe, runtime = plan.recipe, plan.runtime
    seed_everything(plan.seed, plan.train.deterministic)
    model = init_weights(build_network(plan, plan.seed), recipe.init).to(b.device)
    net = runtime.prepare_model(model)
    loop = our_loop(net, build_optimizer(model, recipe.optimizer), runtime,
                    StepRules(recipe.label_smoothing, recipe.grad_clip))
    last = last_batch_size(len(b.data), recipe.batch_size)
    try:
        with endless(our_epochs_for(b, plan)) as batches:
            warm = warm_up(loop, batches, b.budget.warmup, b.device, last)
            measured = measure(loop, batches, b.budget, b.device)
    finally:
        del model, net, loop
        if runtime.compile:
            torch._dynamo.reset()  # the next network must not inherit this one's graphs (nor their cache limit)
        release(b.device)
    warm_images = b.budget.warmup * recipe.batch_size + (last or 0)
    compile_s = max(0.0, warm - warm_images / measured.rate) if runtime.compile else None
    progress(f"  {plan.arch}, ours: {measured.rate:,.0f} images/s over {measured.steps} steps"
             + (f", compile {compile_s:.1f} s" if compile_s is not None else ""))
    return {**measured.as_dict(), "warmup_seconds": warm, "compile_seconds": compile_s}


def peak_for(b: Bench, runtime: Runtime) -> dict:
    """The peak a row is a share of: --peak-tflops, or bf16 matmuls on CUDA, or ours' dtype on the CPU."""
    if b.args.peak_tflops is not None:
        return {"tflops": b.args.peak_tflops, "how": "--peak-tflops"}
    dtype = torch.bfloat16 if b.device.type == "cuda" else (runtime.amp_dtype or torch.float32)
    key = str(dtype).removeprefix("torch.")
    if key not in b.peaks:
        size = b.args.peak_size or (8192 if b.device.type == "cuda" else 2048)
        tflops = matmul_tflops(b.device, dtype, size)
        b.peaks[key] = {"tflops": tflops, "how": f"measured: median of timed {size}x{size} {key} matmuls"}
        progress(f"peak {key}: {tflops:.2f} TFLOP/s ({size}x{size} matmuls)")
    return b.peaks[key]
