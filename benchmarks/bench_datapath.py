"""Benchmark: our tensor data path against the standard torchvision + DataLoader path.

Why: the pipeline keeps the uint8 training set as one tensor on the device and builds each batch
with whole-batch tensor ops (`fmnist.data.tensors`) instead of the usual per-sample PIL transforms
behind a `DataLoader`. This script measures what that buys, and what the data path and the
per-epoch MLflow logging cost inside a training epoch, so the claims are figures anyone can
re-measure (`make bench`) rather than assertions.

Both paths serve the same 60,000 training images (the official idx files), in batches of 128,
shuffled, with the same augmentation (horizontal flip p=0.5, random translation up to 2 px with
zero fill) and the same normalisation:

- standard: `torchvision.datasets.FashionMNIST` with `RandomHorizontalFlip(0.5)`,
  `RandomCrop(28, padding=2)`, `ToTensor()`, `Normalize(mean, std)`, behind
  `DataLoader(batch_size=128, shuffle=True, num_workers=w)` for each w in --workers (the best
  counts as "the standard path"); on CUDA with pin_memory=True and non_blocking copies;
- ours: `DeviceDataset.from_arrays` + `train_batches(..., BatchAugment(0.5, 2))`.

What is measured, in one run on one machine:

1. data only: images/s of one full augmented epoch per path (batches built and touched, no model);
2. training: images/s and epoch time of one identical training step (same initial weights, Adam
   lr 1e-3, cross-entropy) fed by each path, per model; timed over --train-batches batches after
   --warmup-batches, the epoch time projected from that rate (or measured with --full-epochs);
3. data-path overhead: the same steps over batches prepared in advance (pre-augmented, normalised
   tensors in a list) against the steps fed by each path: (t_path - t_ready) / t_ready;
4. MLflow overhead: a short training (--mlflow-epochs "epochs" of N batches) with and without
   logging the pipeline's per-epoch record to a real run in a temporary SQLite store; the logging
   calls are timed one by one and compared with a full (projected) epoch.

For 2 and 3, the paths without background workers (prepared batches, ours, the standard path with
0 workers) take turns, --chunk batches at a time, on one model, so that a change of load on a
shared machine hits them alike; a standard path with workers is timed on its own (its workers
would otherwise prepare batches during the other paths' turns). Every timing is the best of
--repeats. Throughput is per image, so the last partial batch of an epoch is counted fairly. The
report (Markdown, written atomically) states the machine, versions, commit, command line, the
tables and whether each target is met, and records torch's thread count (--threads; torch's default
otherwise) and the load average: on a busy machine, intra-op threads waiting for cores distort
every figure (our many small batch ops most of all). It is a measurement script, never a test.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import gzip
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from fmnist.data.fetch import OFFICIAL_FILES, TORCHVISION_SUBDIR
from fmnist.training.devices import resolve_device, sync
from fmnist.data.idx import read_pair
from fmnist.data.prepare import Arrays, normalisation_stats
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, train_batches
from fmnist.core.io import atomic_write_text
from fmnist.models import UnknownModelError, create_model, model_info

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HFLIP, TRANSLATE = 0.5, 2  # the augmentation both paths apply
LR = 1e-3
TARGETS = {"data_speedup": 10.0, "data_overhead_pct": 5.0, "mlflow_pct": 1.0}

Batch = tuple[torch.Tensor, torch.Tensor]
EpochFn = Callable[[], Iterator[Batch]]  # returns a fresh iterator over one epoch of batches


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/benchmarks.md", help="Markdown report to write (default: %(default)s)")
    p.add_argument("--models", default="cnn4,resnet18", help="comma-separated registered models (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-batches", default="60", type=parse_batches,
                   help="training batches timed per path: N for every model, or e.g. '60,resnet18=20' "
                        "(a default and per-model overrides); default: %(default)s")
    p.add_argument("--warmup-batches", type=int, default=2, help="untimed batches before each timing")
    p.add_argument("--chunk", type=int, default=10,
                   help="training batches per turn when paths are interleaved (default: %(default)s)")
    p.add_argument("--full-epochs", action="store_true",
                   help="time one full epoch per path instead of projecting it from --train-batches")
    p.add_argument("--workers", default="0,2", type=lambda s: [int(w) for w in s.split(",")],
                   help="DataLoader num_workers values for the standard path; the best counts (default: 0,2)")
    p.add_argument("--repeats", type=int, default=1, help="each timing is the best of this many (default: 1)")
    p.add_argument("--mlflow-epochs", type=int, default=3, help="short 'epochs' for the MLflow overhead")
    p.add_argument("--mlflow-model", default="cnn4")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--data-limit", type=int, default=None, help="use only the first N training images (smoke runs)")
    p.add_argument("--raw-dir", type=Path, default=ROOT / "data" / "raw",
                   help="the download stage's output (holding FashionMNIST/raw/); default: data/raw")
    p.add_argument("--stats", type=Path, default=ROOT / "data" / "prepared" / "stats.json",
                   help="normalisation statistics; computed from the images if absent")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


@dataclass(frozen=True)
class BatchBudget:
    default: int
    per_model: dict[str, int] = field(default_factory=dict)

    def __call__(self, model: str) -> int:
        return self.per_model.get(model, self.default)


def parse_batches(spec: str) -> BatchBudget:
    default, per_model = 60, {}
    for part in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = part.rpartition("=")
        if not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"'{part}': expected N or MODEL=N with N >= 1")
        if name:
            per_model[name] = int(value)
        else:
            default = int(value)
    return BatchBudget(default, per_model)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data

def torchvision_root(raw_dir: Path, scratch: Path) -> tuple[Path, str]:
    """A root R such that torchvision's FashionMNIST finds R/FashionMNIST/raw/<name> (decompressed:
    its `_check_exists` looks for the names without .gz). The download stage's output if complete,
    else the .gz files (ours or Debian's) decompressed under `scratch`."""
    if all((raw_dir / TORCHVISION_SUBDIR / name).is_file() for name in OFFICIAL_FILES):
        return raw_dir, str(raw_dir / TORCHVISION_SUBDIR)
    for source in (raw_dir / TORCHVISION_SUBDIR, DEBIAN_DIR):
        if all((source / f"{name}.gz").is_file() for name in OFFICIAL_FILES):
            target = scratch / TORCHVISION_SUBDIR
            target.mkdir(parents=True, exist_ok=True)
            for name in OFFICIAL_FILES:
                with gzip.open(source / f"{name}.gz") as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            return scratch, f"{source} (.gz, decompressed to a temporary directory)"
    sys.exit(f"no Fashion-MNIST idx files in {raw_dir / TORCHVISION_SUBDIR} or {DEBIAN_DIR}: "
             "run `dvc repro download` (or `make setup` for Debian's dataset-fashion-mnist)")


def load_train(root: Path, limit: int | None) -> Arrays:
    raw = root / TORCHVISION_SUBDIR
    x, y = read_pair(raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte")
    return Arrays(x[:limit], y[:limit].astype(np.int64))


def normalisation(stats_path: Path, arrays: Arrays, limited: bool) -> tuple[float, float, str]:
    if stats_path.is_file() and not limited:
        stats = json.loads(stats_path.read_text())
        return stats["mean"], stats["std"], str(stats_path)
    stats = normalisation_stats(arrays.x)
    return stats["mean"], stats["std"], "computed from the benchmark's images"


# ----------------------------------------------------------------------------- the two paths

def standard_epochs(root: Path, mean: float, std: float, limit: int | None, batch_size: int, workers: int,
                    device: torch.device, seed: int) -> EpochFn:
    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(HFLIP),
        transforms.RandomCrop(28, padding=TRANSLATE),
        transforms.ToTensor(),
        transforms.Normalize((mean,), (std,)),
    ])
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True, download=False, transform=transform)
    if limit is not None:
        dataset.data, dataset.targets = dataset.data[:limit], dataset.targets[:limit]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))

    def epoch() -> Iterator[Batch]:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return epoch


def our_epochs(data: DeviceDataset, mean: float, std: float, batch_size: int, seed: int) -> EpochFn:
    generator = torch.Generator(device=data.x.device).manual_seed(seed)
    normalize, augment = Normalizer(mean, std), BatchAugment(HFLIP, TRANSLATE)
    return lambda: train_batches(data, batch_size, generator, normalize, augment)


def ready_epochs(source: EpochFn, count: int) -> EpochFn:
    """`count` batches from `source`, built now and kept: the training steps then cost no data path."""
    with endless(source) as batches:
        ready = [(x.clone(), y.clone()) for x, y in islice(batches, count)]
    return lambda: iter(ready)


@contextlib.contextmanager
def endless(epoch: EpochFn) -> Iterator[Iterator[Batch]]:
    """Batches across epoch boundaries; closed on exit (so DataLoader workers stop)."""
    def forever() -> Iterator[Batch]:
        while True:
            yield from epoch()
    batches = forever()
    try:
        yield batches
    finally:
        batches.close()


# ----------------------------------------------------------------------------- measurements

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


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch], n: int
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """n steps of the pipeline's training step; loss and hits accumulated on the device as it does."""
    total_loss = torch.zeros((), device=next(model.parameters()).device)
    correct = torch.zeros((), device=total_loss.device, dtype=torch.long)
    images = 0
    for x, y in islice(batches, n):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        images += len(y)
    return total_loss, correct, images


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
    optimizer = fresh_optimizer(model, state, seed)
    totals = {key: Timing(0.0, 0) for key in paths}
    with contextlib.ExitStack() as stack:
        streams = {key: stack.enter_context(endless(epoch)) for key, epoch in paths.items()}
        for batches in streams.values():
            train_steps(model, optimizer, batches, warmup)
        keys = list(streams)
        for turn, start in enumerate(range(0, n, chunk)):
            for key in keys[turn % len(keys):] + keys[:turn % len(keys)]:
                sync(device)
                t0 = time.perf_counter()
                _, _, images = train_steps(model, optimizer, streams[key], min(chunk, n - start))
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


@contextlib.contextmanager
def temporary_tracking_store() -> Iterator[Path]:
    """A fresh SQLite MLflow store in a temporary directory; the project's mlflow.db is never touched."""
    import mlflow

    previous_env, previous_uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri  # fmnist.tracking.configure reads it first
        mlflow.set_tracking_uri(uri)
        try:
            yield Path(tmp)
        finally:
            if previous_env is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous_env
            mlflow.set_tracking_uri(previous_uri)


def short_training(s: Setup, model: nn.Module, state: dict, log: Callable[[dict], None] | None
                   ) -> tuple[float, list[float], int]:
    """--mlflow-epochs 'epochs' of N batches; returns (wall seconds, seconds of each log call, images)."""
    n, epochs = s.timed_batches(s.args.mlflow_model), s.args.mlflow_epochs
    optimizer = fresh_optimizer(model, state, s.args.seed)
    log_seconds, cumulative, images_total = [], 0.0, 0
    with endless(s.ours) as batches:
        train_steps(model, optimizer, batches, s.args.warmup_batches)
        sync(s.device)
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            loss, correct, images = train_steps(model, optimizer, batches, n)
            train_loss, train_acc = loss.item() / images, correct.item() / images
            seconds = time.perf_counter() - t0
            cumulative += seconds
            images_total += images
            # The pipeline's record; the val/test fields repeat the train figures (no evaluation here:
            # what a log call costs does not depend on the values).
            record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": train_loss,
                      "val_acc": train_acc, "lr": LR, "epoch_seconds": seconds, "cumulative_seconds": cumulative,
                      "test_loss": train_loss, "test_acc": train_acc}
            if log is not None:
                t0 = time.perf_counter()
                log(record)
                log_seconds.append(time.perf_counter() - t0)
        return time.perf_counter() - start, log_seconds, images_total


@dataclass
class MlflowResult:
    wall_off: float
    wall_on: float
    log_seconds: list[float]
    run_setup: float  # tracked_run start + end, per run
    images: int

    @property
    def log_mean(self) -> float:
        return sum(self.log_seconds) / len(self.log_seconds)


def bench_mlflow(s: Setup) -> MlflowResult:
    from fmnist import tracking

    model, state = build_model(s.args.mlflow_model, s.device, s.args.seed)
    off, on, logs, setups = [], [], [], []
    with temporary_tracking_store() as tmp:
        for _ in range(s.args.repeats):
            wall, _, images = short_training(s, model, state, log=None)
            off.append(wall)
            t0 = time.perf_counter()
            with tracking.tracked_run("bench-datapath", run_name="mlflow-overhead", root=tmp):
                t1 = time.perf_counter()
                wall, seconds, _ = short_training(s, model, state, log=tracking.log_epoch)
                t2 = time.perf_counter()
            setups.append((t1 - t0) + (time.perf_counter() - t2))
            on.append(wall)
            logs.extend(seconds)
    result = MlflowResult(min(off), min(on), logs, min(setups), images)
    progress(f"  MLflow: log_epoch {result.log_mean * 1e3:.1f} ms per call, wall off {result.wall_off:.2f} s, "
             f"on {result.wall_on:.2f} s")
    return result


# ----------------------------------------------------------------------------- environment

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


def git_state() -> str:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit, changes = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} dirty (uncommitted changes)" if changes else commit


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
        ("git commit", git_state()),
        ("command", f"`{shlex.join(sys.orig_argv)}`"),
    ]


# ----------------------------------------------------------------------------- report

def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def path_label(key: str) -> str:
    if key.startswith("standard:"):
        w = int(key.split(":")[1])
        return f"standard (torchvision + DataLoader), {w} worker{'s' if w != 1 else ''}"
    return {"ours": "ours (DeviceDataset + BatchAugment)", "ready": "prepared batches (no data path)"}[key]


def best_standard(results: dict[str, Timing]) -> tuple[str, Timing]:
    key = min((k for k in results if k.startswith("standard:")), key=lambda k: 1 / results[k].rate)
    return key, results[key]


def pct(value: float) -> str:
    return f"{value:+.1f}%"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def data_section(data: dict[str, Timing]) -> tuple[str, str]:
    std_key, std = best_standard(data)
    rows = [[path_label(k), f"{t.images:,}", f"{t.seconds:.2f} s", f"{t.rate:,.0f}",
             f"{t.rate / std.rate:.1f}x"] for k, t in data.items()]
    ratio = data["ours"].rate / std.rate
    text = ("## Data only: one full augmented epoch, no model\n\nBatches built and touched, no model; "
            "iterator creation and DataLoader worker start-up included, after an untimed warm-up.\n\n"
            + table(["path", "images", "time", "images/s", "vs best standard"], rows)
            + f"\n\nOurs / standard (best: {std_key.split(':')[1]} workers): **{ratio:.1f}x**.\n")
    target = (f"- Data path at least {TARGETS['data_speedup']:.0f}x the standard one (data only): "
              f"{ratio:.1f}x: {verdict(ratio >= TARGETS['data_speedup'])}")
    return text, target


def training_section(s: Setup, training: dict[str, dict[str, Timing]], skipped: dict[str, str]) -> str:
    n_images = len(s.arrays)
    epoch_col = ("epoch time (measured, one full epoch)" if s.args.full_epochs
                 else "epoch time (projected from N batches)")
    rows, ratios = [], []
    for name, res in training.items():
        n = s.timed_batches(name)
        for key, t in res.items():
            rows.append([name, path_label(key), str(n), f"{t.rate:,.0f}", f"{n_images / t.rate:.1f} s"])
        std_key, std = best_standard(res)
        ratios.append([name, f"{std.rate:,.0f} ({std_key.split(':')[1]} workers)", f"{res['ours'].rate:,.0f}",
                       f"{res['ours'].rate / std.rate:.2f}x",
                       f"{n_images / std.rate:.1f} s → {n_images / res['ours'].rate:.1f} s"])
    text = (f"## Training: the same step (Adam lr {LR:g}, cross-entropy, same initial weights), "
            f"batch {s.args.batch_size}\n\nEpoch = {n_images:,} images. N = batches timed after "
            f"{s.args.warmup_batches} warm-up batches.\n\n"
            + table(["model", "path", "N", "images/s", epoch_col], rows) + "\n\n"
            + table(["model", "standard images/s (best)", "ours images/s", "ours / standard",
                     "epoch time, standard → ours"], ratios))
    for name, why in skipped.items():
        text += f"\n\n{name}: skipped ({why})."
    return text + "\n"


def overhead_section(training: dict[str, dict[str, Timing]], skipped: dict[str, str]) -> tuple[str, list[str]]:
    rows, targets = [], []
    for name, res in training.items():
        ready = res["ready"].seconds / res["ready"].images
        ours = (res["ours"].seconds / res["ours"].images - ready) / ready * 100
        std_key, std_t = best_standard(res)
        std = (std_t.seconds / std_t.images - ready) / ready * 100
        rows.append([name, f"{ready * 1e3:.3f} ms", f"{res['ours'].seconds / res['ours'].images * 1e3:.3f} ms",
                     pct(ours), f"{std_t.seconds / std_t.images * 1e3:.3f} ms", pct(std)])
        targets.append(f"- Our data-path overhead at most {TARGETS['data_overhead_pct']:.0f}% of a training epoch "
                       f"({name}): {pct(ours)}: {verdict(ours <= TARGETS['data_overhead_pct'])}")
    targets += [f"- Our data-path overhead ({name}): not measured ({why})" for name, why in skipped.items()]
    text = ("## Data-path overhead inside a training epoch\n\nThe same steps over batches prepared in advance "
            "(pre-augmented, normalised tensors in a list) against the steps fed by each path; "
            "overhead = (t_path − t_ready) / t_ready, per image.\n\n"
            + table(["model", "prepared batches, per image", "ours, per image", "ours overhead",
                     "standard (best), per image", "standard overhead"], rows) + "\n")
    return text, targets


def mlflow_section(s: Setup, m: MlflowResult) -> tuple[str, str]:
    epoch_full = len(s.arrays) * m.wall_off / m.images
    share = m.log_mean / epoch_full * 100
    diff = m.wall_on - m.wall_off
    n = s.timed_batches(s.args.mlflow_model)
    rows = [
        ["log_epoch call (mean / max of all calls)", f"{m.log_mean * 1e3:.1f} ms / {max(m.log_seconds) * 1e3:.1f} ms"],
        ["full epoch (projected from the untracked run's rate)", f"{epoch_full:.1f} s"],
        ["logging calls as share of a full epoch", f"{share:.3f}%"],
        [f"wall, tracking off ({s.args.mlflow_epochs} × {n} batches)", f"{m.wall_off:.2f} s"],
        [f"wall, tracking on ({s.args.mlflow_epochs} × {n} batches)", f"{m.wall_on:.2f} s"],
        ["difference on − off", f"{diff:+.2f} s ({diff / m.wall_off * 100:+.1f}%; noise included)"],
        ["run start + end (once per training, not per epoch; the first run also creates the store)",
         f"{m.run_setup:.2f} s"],
    ]
    text = (f"## MLflow per-epoch logging ({s.args.mlflow_model}, temporary SQLite store)\n\n"
            "The pipeline's per-epoch record (train/val/test loss and accuracy, lr, epoch_seconds, "
            "cumulative_seconds; step=epoch) logged with `fmnist.tracking.log_epoch` inside "
            "`tracked_run`, after each of the short 'epochs' of training on our data path.\n\n"
            + table(["figure", "value"], rows) + "\n")
    target = (f"- MLflow logging at most {TARGETS['mlflow_pct']:.0f}% of an epoch ({s.args.mlflow_model}): "
              f"{share:.3f}%: {verdict(share <= TARGETS['mlflow_pct'])}")
    return text, target


def render(s: Setup, notes: dict, env: list[tuple[str, str]], data: dict[str, Timing],
           training: dict[str, dict[str, Timing]], skipped: dict[str, str], mlflow_result: MlflowResult | None) -> str:
    limit = f" (--data-limit {s.args.data_limit})" if s.args.data_limit else ""
    head = ("# Data-path benchmark: ours against torchvision + DataLoader\n\n"
            "Written by `benchmarks/bench_datapath.py` (`make bench`); what it measures and why is in its "
            "docstring and in `benchmarks/README.md`.\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in env)
            + f"\n- data: {notes['images']:,} training images{limit} from {notes['data']}; "
              f"normalisation mean {s.mean:.4f}, std {s.std:.4f} ({notes['stats']})"
            + f"\n- batch {s.args.batch_size}; augmentation: horizontal flip p={HFLIP}, translation up to "
              f"{TRANSLATE} px with zero fill (RandomCrop(28, padding={TRANSLATE})); each timing the best of "
              f"{s.args.repeats}\n")
    data_text, data_target = data_section(data)
    parts, targets = [head, data_text, training_section(s, training, skipped)], [data_target]
    if training:
        over_text, over_targets = overhead_section(training, skipped)
        parts.append(over_text)
        targets += over_targets
    if mlflow_result is not None:
        ml_text, ml_target = mlflow_section(s, mlflow_result)
        parts.append(ml_text)
        targets.append(ml_target)
    else:
        targets.append(f"- MLflow logging: not measured ({s.args.mlflow_model} is not registered)")
    parts.append("## Targets\n\n" + "\n".join(targets) + "\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except RuntimeError:
        sys.exit("--device cuda: no CUDA device is available")
    load_before = load_average()
    models = [m for m in args.models.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="bench-datapath-") as scratch:
        s, notes = make_setup(args, device, Path(scratch))
        progress(f"{notes['images']:,} images on {device}, {torch.get_num_threads()} torch threads")
        data = bench_data(s)
        training, skipped = {}, {}
        for name in models:
            try:
                training[name] = bench_training(s, name)
            except UnknownModelError as err:
                skipped[name] = str(err)
                progress(f"  {name}: skipped: {err}")
        try:
            mlflow_result = bench_mlflow(s)
        except UnknownModelError as err:
            mlflow_result = None
            progress(f"  MLflow overhead: skipped: {err}")
        report = render(s, notes, environment(device, load_before), data, training, skipped, mlflow_result)
    print(report)
    atomic_write_text(args.out, report)
    progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
