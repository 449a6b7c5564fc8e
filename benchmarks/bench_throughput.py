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
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
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
from datapath.markdown import table
from datapath.paths import ROOT, endless, load_train, standard_epochs, torchvision_root
from datapath.throughput import (
    Budget,
    last_batch_size,
    matmul_tflops,
    measure,
    our_loop,
    plain_loop,
    warm_up,
)
from datapath.timing import progress

from fmnist.core.config import Params, load_params
from fmnist.core.errors import FmnistError
from fmnist.core.io import atomic_write_text, write_json
from fmnist.data.prepare import normalisation_stats
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, train_batches
from fmnist.models import ModelKind, create_model, model_info
from fmnist.models.init import init_weights
from fmnist.training.devices import resolve_device
from fmnist.training.flops import training_flops_per_image
from fmnist.training.optim import build_optimizer
from fmnist.training.plan import RunPlan, plan_run
from fmnist.training.runtime import Runtime, seed_everything
from fmnist.training.steps import StepRules

DEFAULT_NETWORKS = ("mlp,cnn4,qstp_cnn5,basic_cnn,mini_vgg,wrn16_4,resnet18,resnet34,resnet50,mobilenet_v2,"
                    "shufflenet_v2,shakeshake_resnet34,fastcnn,speedrun")
NUM_CLASSES = 10


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


@dataclasses.dataclass
class Bench:
    args: argparse.Namespace
    device: torch.device
    budget: Budget
    workers: int
    root: Path  # holds FashionMNIST/raw/ for torchvision
    data: DeviceDataset  # ours: the training images on the device
    mean: float
    std: float
    peaks: dict[str, dict]  # by dtype: {"tflops", "how"}


def make_bench(args: argparse.Namespace, device: torch.device, scratch: Path) -> tuple[Bench, str]:
    root, source = torchvision_root(args.raw_dir, scratch)
    arrays = load_train(root, None)
    stats = normalisation_stats(arrays.x)
    budget = Budget(args.seconds, args.steps, args.warmup)
    workers = default_workers(device) if args.workers is None else args.workers
    data = DeviceDataset.from_arrays(arrays, device)
    return Bench(args, device, budget, workers, root, data, stats["mean"], stats["std"], {}), source


# ----------------------------------------------------------------------------- the measurements

def release(device: torch.device) -> None:
    """Give back what a network held, so the next one starts with the device's whole memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attempt(what: str, name: str, fn: Callable[[], dict]) -> tuple[dict | None, str | None]:
    """fn's figures, or its error in one line: one network failing (out of memory, compile error) stops no other."""
    try:
        return fn(), None
    except Exception as err:  # any failure of one measurement is that row's error, whatever its type
        message = " ".join(str(err).split())[:300] or "(no message)"
        progress(f"  {name}, {what}: failed: {type(err).__name__}: {message}")
        return None, f"{type(err).__name__}: {message}"


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


def describe(plan: RunPlan) -> dict:
    recipe, runtime = plan.recipe, plan.runtime
    return {"network": plan.info.name, "model": plan.model_options, "batch_size": recipe.batch_size,
            "precision": runtime.precision, "channels_last": runtime.channels_last, "compile": runtime.compile,
            "optimizer": recipe.optimizer.name, "augment": recipe.augment.model_dump(),
            "deterministic": plan.train.deterministic}


def derived(row: dict, images_per_epoch: int) -> dict:
    """Speed-up, arithmetic rate and share of peak, from the measured figures a row has."""
    plain, ours, gflop = row.get("plain"), row.get("ours"), row.get("gflop_per_image")
    out = {}
    if plain and ours:
        out["speedup"] = ours["images_per_s"] / plain["images_per_s"]
    if gflop is not None:
        for key, figures in (("plain", plain), ("ours", ours)):
            if figures:
                out[f"{key}_tflops"] = figures["images_per_s"] * gflop / 1e3
    if "ours_tflops" in out and row.get("peak"):
        out["share_of_peak"] = out["ours_tflops"] / row["peak"]["tflops"]
    if ours and ours["compile_seconds"] is not None:
        epoch = images_per_epoch / ours["images_per_s"]
        out["epoch1_images_per_s_with_compile"] = images_per_epoch / (epoch + ours["compile_seconds"])
    return out


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


# ----------------------------------------------------------------------------- the report

def number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def runs_as(row: dict) -> str:
    return ", ".join([row["precision"], "NHWC" if row["channels_last"] else "NCHW",
                      "compiled" if row["compile"] else "eager"])


def label(row: dict) -> str:
    network = row.get("network", row["recipe"])
    return row["recipe"] if network == row["recipe"] else f"{row['recipe']} ({network})"


def table_row(row: dict) -> list[str]:
    errors = "; ".join(f"{what}: {error}" for what, error in row["errors"].items())
    if "network" not in row:  # no plan: nothing was measured
        return [label(row)] + ["–"] * (len(HEADER) - 2) + [errors]
    plain, ours = row.get("plain") or {}, row.get("ours") or {}
    share = row.get("share_of_peak")
    return [label(row), str(row["batch_size"]), runs_as(row), number(plain.get("images_per_s"), ",.0f"),
            number(ours.get("images_per_s"), ",.0f"), number(row.get("speedup"), ".2f"),
            number(row.get("gflop_per_image"), ".4f"), number(row.get("ours_tflops"), ".3f"),
            number(None if share is None else share * 100, ".1f"), number(ours.get("compile_seconds"), ".1f"),
            number(row.get("epoch1_images_per_s_with_compile"), ",.0f"), errors]


HEADER = ["network", "batch", "ours runs", "plain img/s", "ours img/s", "speed-up (x)", "GFLOP/img (train)",
          "ours TFLOP/s", "% of peak", "compile s", "epoch 1 img/s with compile", "error"]


def render(env: list[tuple[str, str]], settings: dict, peaks: dict, rows: list[dict]) -> str:
    peak_lines = [f"- peak {k}: {v['tflops']:.2f} TFLOP/s ({v['how']})" for k, v in peaks.items()]
    return ("# Training throughput: ours against a plain PyTorch loop\n\n"
            "Written by `benchmarks/bench_throughput.py`; what is timed and how is in its docstring and in "
            "`benchmarks/README.md`.\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in env) + "\n"
            + "\n".join(f"- {k}: {v}" for k, v in settings.items()) + "\n"
            + "\n".join(peak_lines) + "\n\n"
            + "plain: torchvision + DataLoader, fp32, eager, SGD, no augmentation; ours: the pipeline's data path "
              "and step for the recipe. % of peak: ours TFLOP/s over the peak above.\n\n"
            + table(HEADER, [table_row(r) for r in rows]) + "\n")


def settings_of(b: Bench, params: Params, source: str) -> dict:
    budget = f"{b.budget.steps} steps" if b.budget.steps is not None else f"{b.budget.seconds:g} s"
    return {"profile": params.profile, "data": f"{len(b.data):,} training images from {source}",
            "budget": f"{budget} per measurement, after {b.budget.warmup} untimed warm-up step(s)",
            "plain DataLoader workers": b.workers, "compile": b.args.compile}


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
