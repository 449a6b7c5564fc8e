"""Benchmark: training throughput per network, our pipeline against a plain PyTorch loop, and its share of peak.

Why: a GPU session has minutes, not hours. This states, per network, how many training images per second the
pipeline's own path reaches on the device, what the loop a PyTorch user writes reaches with the same network
and batch size, and how much of the device's arithmetic peak the pipeline uses, so that budgets are sized from
measurements and a slow network shows up as a low share of peak rather than as a surprise.

Each name in --networks is a recipe of params.yaml resolved for --profile (default: the one params.yaml names);
both paths train its network (with its model options) on batches of its batch size, from the 60,000 training
images:

- plain: `torchvision.datasets.FashionMNIST(transform=ToTensor() + Normalize)` behind
  `DataLoader(shuffle=True, num_workers=--workers, pin_memory=True on CUDA, persistent_workers=True)`, each batch
  `.to(device, non_blocking=True)`; fp32, eager, SGD (lr 0.01, momentum 0.9), cross-entropy, no augmentation;
- ours: `DeviceDataset` + `train_batches` with the recipe's augmentation, `train_steps` with
  `Runtime.for_recipe` (autocast dtype, channels_last, torch.compile as the recipe says; --compile overrides),
  the recipe's optimizer, label smoothing and gradient clipping, torch's determinism as the profile's
  `train.deterministic` sets it. Not counted: the learning-rate schedule and evaluation.

Timing: --warmup untimed steps (ours then takes one step on an epoch's last, smaller batch, so that a compiled
network compiles both shapes before the clock starts), then --steps steps, or as many as fill --seconds; the
device is synchronised before every clock read. Compile time = ours' warm-up minus its images at the measured
rate; "epoch 1 with compile" = one epoch's images over (the epoch at the measured rate + compile time).

Arithmetic: training GFLOP per image = `fmnist.training.flops.training_flops_per_image` (forward counted by
torch's FlopCounterMode, times 3). Achieved TFLOP/s = ours images/s x FLOP per image. Peak = --peak-tflops, or
measured: the median of timed 8192 x 8192 bf16 matmuls on random data on CUDA; on the CPU --peak-size matmuls
in ours' dtype. A failure of one network (out of memory, a compile error) is an error in its row; the rest go on.
The environment, then a Markdown table, are printed last; --out DIR also gets throughput.md and throughput.json
(every figure), written atomically.

This file holds the command line, the Bench (the device, the data, the budget) and main, which measures each
network into a row; the measurements are in `datapath/throughput.py`, the derived figures and the Markdown report
in `datapath/throughput_report.py`. Nothing here imports MLflow: the GPU machines have none.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

# The GPU machines run the tree as sent, uninstalled: the repository (for `fmnist`) and the `datapath` package
# beside this file go on sys.path, wherever the command runs from.
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from datapath.machine import environment, load_average
from datapath.paths import ROOT, load_train, torchvision_root
from datapath.throughput import Bench, Budget, count_flops, measure_ours, measure_plain, peak_for
from datapath.throughput_report import derived, render, settings_of
from datapath.timing import progress

from fmnist.core.config import Params, load_params
from fmnist.core.errors import FmnistError
from fmnist.core.io import atomic_write_text, write_json
from fmnist.data.prepare import normalisation_stats
from fmnist.data.tensors import DeviceDataset
from fmnist.models import ModelKind, model_info
from fmnist.training.devices import resolve_device
from fmnist.training.plan import RunPlan, plan_run

DEFAULT_NETWORKS = ("mlp,cnn4,qstp_cnn5,basic_cnn,mini_vgg,wrn16_4,resnet18,resnet34,resnet50,mobilenet_v2,"
                    "shufflenet_v2,shakeshake_resnet34,fastcnn,gpu94")


class UsageError(Exception):
    """Bad input on the command line: one line naming the problem and the fix, exit code 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", default=DEFAULT_NETWORKS,
                   help="comma-separated recipes of params.yaml (each trains its network); default: %(default)s")
    p.add_argument("--profile", default=None, help="the profile the recipes resolve for (default: params.yaml's)")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per measurement (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement instead of --seconds")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before each measurement (default: 5)")
    p.add_argument("--workers", type=int, default=None,
                   help="the plain loop's DataLoader num_workers (default: half the usable cores, at most 8, on "
                        "CUDA; 0 on the CPU, where workers would take the cores the training needs)")
    p.add_argument("--compile", choices=("recipe", "on", "off"), default="recipe",
                   help="torch.compile ours as the recipe says, always, or never (default: recipe)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak; measured if not given")
    p.add_argument("--peak-size", type=int, default=None,
                   help="matmul size of the measured peak (default: 8192 on CUDA, 2048 on the CPU)")
    p.add_argument("--raw-dir", type=Path, default=ROOT / "data" / "raw",
                   help="a folder with the four Fashion-MNIST .gz files, or holding FashionMNIST/raw/ "
                        "(default: data/raw; Debian's copy if neither)")
    p.add_argument("--out", type=Path, default=None, help="folder for throughput.md and throughput.json")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    positive = {"--seconds": args.seconds, "--steps": args.steps, "--peak-tflops": args.peak_tflops,
                "--peak-size": args.peak_size, "--threads": args.threads}
    for flag, value in positive.items():
        if value is not None and value <= 0:
            raise UsageError(f"{flag} {value}: must be positive")
    for flag, value in {"--warmup": args.warmup, "--workers": args.workers}.items():
        if value is not None and value < 0:
            raise UsageError(f"{flag} {value}: must be 0 or more")


# ----------------------------------------------------------------------------- what runs

def device_of(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except FmnistError:
        raise UsageError("--device cuda: no CUDA device is available; use --device cpu (or auto)") from None


def params_of(args: argparse.Namespace) -> Params:
    try:
        return load_params(args.params, [], profile=args.profile)
    except FmnistError as err:
        raise UsageError(f"{err}") from None


def recipe_names(args: argparse.Namespace, params: Params) -> list[str]:
    """The names asked for, each a recipe of a registered torch network; any other name is a usage error."""
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    networks = sorted(n for n, r in params.recipes.items() if is_network(r.network))
    for name in names:
        if name not in params.recipes or not is_network(params.recipes[name].network):
            raise UsageError(f"unknown network '{name}': not a network recipe of {args.params.name} (profile "
                             f"{params.profile}); choose from {', '.join(networks)}")
    if not names:
        raise UsageError("--networks is empty; name at least one recipe, e.g. --networks mlp,fastcnn")
    return names


def is_network(network: str) -> bool:
    try:
        return model_info(network).kind == ModelKind.TORCH
    except FmnistError:
        return False


def plan_for(params: Params, name: str, device: torch.device, compile_mode: str) -> RunPlan:
    """The pipeline's plan for the recipe on this device (every check it makes), with --compile applied."""
    run = params.run_of(name)
    run = run.model_copy(update={"train": run.train.model_copy(update={"device": device.type})})
    plan = plan_run(run)
    if compile_mode != "recipe":
        plan = dataclasses.replace(plan, runtime=dataclasses.replace(plan.runtime, compile=compile_mode == "on"))
    return plan


def default_workers(device: torch.device) -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, max(1, usable // 2)) if device.type == "cuda" else 0


def make_bench(args: argparse.Namespace, device: torch.device, scratch: Path) -> tuple[Bench, str]:
    root, source = torchvision_root(args.raw_dir, scratch)
    arrays = load_train(root, None)
    stats = normalisation_stats(arrays.x)
    budget = Budget(args.seconds, args.steps, args.warmup)
    workers = default_workers(device) if args.workers is None else args.workers
    data = DeviceDataset.from_arrays(arrays, device)
    return Bench(args, device, budget, workers, root, data, stats["mean"], stats["std"], {}), source


# ----------------------------------------------------------------------------- one network's row

def attempt(what: str, name: str, fn: Callable[[], dict]) -> tuple[dict | None, str | None]:
    """fn's figures, or its error in one line: one network failing (out of memory, compile error) stops no other."""
    try:
        return fn(), None
    except Exception as err:  # any failure of one measurement is that row's error, whatever its type
        message = " ".join(str(err).split())[:300] or "(no message)"
        progress(f"  {name}, {what}: failed: {type(err).__name__}: {message}")
        return None, f"{type(err).__name__}: {message}"


def describe(plan: RunPlan) -> dict:
    recipe, runtime = plan.recipe, plan.runtime
    return {"network": plan.info.name, "model": plan.model_options, "batch_size": recipe.batch_size,
            "precision": runtime.precision, "channels_last": runtime.channels_last, "compile": runtime.compile,
            "optimizer": recipe.optimizer.name, "augment": recipe.augment.model_dump(),
            "deterministic": plan.train.deterministic}


def bench_network(b: Bench, params: Params, name: str) -> dict:
    progress(f"{name}:")
    row: dict = {"recipe": name, "errors": {}}
    try:
        plan = plan_for(params, name, b.device, b.args.compile)
    except FmnistError as err:  # e.g. precision bf16 on a device without it: this row only
        row["errors"]["plan"] = str(err)
        progress(f"  {name}: {err}")
        return row
    row.update(describe(plan))
    for what, fn in (("flops", lambda: count_flops(plan, b.args.seed)), ("plain", lambda: measure_plain(b, plan)),
                     ("ours", lambda: measure_ours(b, plan)), ("peak", lambda: peak_for(b, plan.runtime))):
        figures, error = attempt(what, name, fn)
        if error is not None:
            row["errors"][what] = error
        elif what == "flops":
            row.update(figures)
        else:
            row[what] = figures
    row.update(derived(row, len(b.data)))
    return row


# ----------------------------------------------------------------------------- the outputs

def write_outputs(out: Path, report: str, record: dict) -> None:
    atomic_write_text(out / "throughput.md", report)
    write_json(out / "throughput.json", record)
    progress(f"wrote {out / 'throughput.md'} and {out / 'throughput.json'}")


# ----------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    params = params_of(args)
    names = recipe_names(args, params)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as scratch:
        b, source = make_bench(args, device, Path(scratch))
        progress(f"{len(b.data):,} images on {device}; {len(names)} networks; plain loop with {b.workers} workers")
        rows = [bench_network(b, params, name) for name in names]
    env, settings = environment(device, load_before), settings_of(b, params, source)
    report = render(env, settings, b.peaks, rows)
    print(report)
    if args.out is not None:
        write_outputs(args.out, report, {"environment": dict(env), "settings": settings, "peaks": b.peaks,
                                         "networks": rows})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as err:
        print(f"bench_throughput: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
