"""The measurements: one data-only epoch per path, and the pipeline's training step fed by each path.

The training step is the library's (`fmnist.training.loop.train_steps`, fp32 `Runtime`), so the
benchmark times exactly the step the pipeline runs. Paths without background workers take turns,
`chunk` batches at a time, so that a change of load on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from torch import nn

from fmnist.data.prepare import Arrays
from fmnist.data.tensors import DeviceDataset
from fmnist.models import create_model, model_info
from fmnist.training.devices import sync
from fmnist.training.runtime import Runtime
from fmnist.training.steps import StepRules, train_steps

from .paths import (
    Batch,
    EpochFn,
    endless,
    load_train,
    normalisation,
    our_epochs,
    ready_epochs,
    standard_epochs,
    torchvision_root,
)

LR = 1e-3


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Timing:
    seconds: float
    images: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def best(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda t: t.seconds / t.images)


def time_data_epoch(epoch: EpochFn, device: torch.device, warmup: int) -> Timing:
    """One full epoch, iterator creation (and DataLoader worker start-up) included."""
    for _ in islice(epoch(), warmup):
        pass
    touched = torch.zeros((), device=device)
    images = 0
    sync(device)
    start = time.perf_counter()
    for x, y in epoch():
        touched += x[-1, -1, -1, -1]  # read the batch on the device, no host sync
        images += len(y)
    sync(device)
    return Timing(time.perf_counter() - start, images)


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime, batches: Iterator[Batch],
              n: int, rules: StepRules | None = None) -> tuple[float, float, int]:
    """The pipeline's training step on the next n batches of `batches`: (mean loss, accuracy, images).
    Ends with one host sync (the step's loss and hits are read back once, after the last batch)."""
    images = 0

    def counted() -> Iterator[Batch]:
        nonlocal images
        for x, y in islice(batches, n):
            images += len(y)
            yield x, y
    loss, acc = train_steps(model, counted(), optimizer, runtime, rules)
    return loss, acc, images


def fresh_optimizer(model: nn.Module, state: dict, seed: int) -> torch.optim.Optimizer:
    """Same initial weights, optimizer state and dropout draws for every measurement."""
    torch.manual_seed(seed)
    model.load_state_dict(state)
    model.train()
    return torch.optim.Adam(model.parameters(), lr=LR)


def time_interleaved(model: nn.Module, state: dict, paths: dict[str, EpochFn], n: int, chunk: int, warmup: int,
                     device: torch.device, seed: int) -> dict[str, Timing]:
    """n training batches per path, the paths taking turns `chunk` batches at a time (in a rotating
    order) on one model from the same initial weights, so a change of load on a shared machine
    hits them alike. With one path it is a plain timing of n batches."""
    runtime = Runtime(device)
    optimizer = fresh_optimizer(model, state, seed)
    totals = {key: Timing(0.0, 0) for key in paths}
    with contextlib.ExitStack() as stack:
        streams = {key: stack.enter_context(endless(epoch)) for key, epoch in paths.items()}
        for batches in streams.values():
            run_steps(model, optimizer, runtime, batches, warmup)
        keys = list(streams)
        for turn, start in enumerate(range(0, n, chunk)):
            for key in keys[turn % len(keys):] + keys[:turn % len(keys)]:
                sync(device)
                t0 = time.perf_counter()
                _, _, images = run_steps(model, optimizer, runtime, streams[key], min(chunk, n - start))
                sync(device)
                totals[key].seconds += time.perf_counter() - t0
                totals[key].images += images
    return totals


def build_model(name: str, device: torch.device, seed: int) -> tuple[nn.Module, dict]:
    info = model_info(name)  # UnknownModelError if not registered
    if info.kind != "torch":
        raise ValueError(f"{name} is a {info.kind} model, not a torch one")
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10).to(device)
    return model, copy.deepcopy(model.state_dict())


# ----------------------------------------------------------------------------- the benchmark

@dataclass
class Setup:
    args: argparse.Namespace
    device: torch.device
    arrays: Arrays
    mean: float
    std: float
    standard: dict[int, EpochFn]  # by num_workers
    ours: EpochFn

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.arrays) / self.args.batch_size)

    def timed_batches(self, model: str) -> int:
        return self.batches_per_epoch if self.args.full_epochs else self.args.train_batches(model)


def make_setup(args: argparse.Namespace, device: torch.device, scratch: Path) -> tuple[Setup, dict]:
    root, source = torchvision_root(args.raw_dir, scratch)
    arrays = load_train(root, args.data_limit)
    mean, std, stats_source = normalisation(args.stats, arrays, args.data_limit is not None)
    standard = {w: standard_epochs(root, mean, std, args.data_limit, args.batch_size, w, device, args.seed)
                for w in args.workers}
    data = DeviceDataset.from_arrays(arrays, device)
    ours = our_epochs(data, mean, std, args.batch_size, args.seed)
    notes = {"data": source, "stats": stats_source, "images": len(arrays)}
    return Setup(args, device, arrays, mean, std, standard, ours), notes


def bench_data(s: Setup) -> dict[str, Timing]:
    results: dict[str, list[Timing]] = {}
    for _ in range(s.args.repeats):
        for w, epoch in s.standard.items():
            results.setdefault(f"standard:{w}", []).append(time_data_epoch(epoch, s.device, s.args.warmup_batches))
        results.setdefault("ours", []).append(time_data_epoch(s.ours, s.device, s.args.warmup_batches))
    out = {k: best(v) for k, v in results.items()}
    for k, t in out.items():
        progress(f"  data only, {k}: {t.rate:,.0f} images/s ({t.seconds:.2f} s)")
    return out


def bench_training(s: Setup, name: str) -> dict[str, Timing]:
    """Prepared batches, ours and the single-process standard path take turns (interleaved); a
    standard path with workers is timed on its own, since its workers would keep preparing batches
    (and taking CPU) during the other paths' turns."""
    model, state = build_model(name, s.device, s.args.seed)
    n, warmup = s.timed_batches(name), s.args.warmup_batches
    in_process = {"ready": ready_epochs(s.ours, warmup + n), "ours": s.ours}
    in_process.update({f"standard:{w}": e for w, e in s.standard.items() if w == 0})
    groups = [in_process] + [{f"standard:{w}": e} for w, e in s.standard.items() if w > 0]
    results: dict[str, list[Timing]] = {}
    for _ in range(s.args.repeats):
        for group in groups:
            timed = time_interleaved(model, state, group, n, s.args.chunk, warmup, s.device, s.args.seed)
            for key, t in timed.items():
                results.setdefault(key, []).append(t)
                progress(f"  {name}, {key}: {t.rate:,.0f} images/s over {n} batches ({t.seconds:.2f} s)")
    return {key: best(results[key]) for key in ["ready", "ours", *(f"standard:{w}" for w in s.standard)]}
