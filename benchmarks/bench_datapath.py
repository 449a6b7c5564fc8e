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

The training step is the pipeline's own (`fmnist.training.loop.train_steps`, fp32), the MLflow record
its `fmnist.core.runs.EpochRecord`. This file is the entry point (command line and main); the pieces
are in the `datapath` package beside it: `paths` (the two data paths), `timing` (the measurements),
`mlflow_cost` (the logging cost) and `report` (the environment and the Markdown).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmnist.core.errors import DeviceError
from fmnist.core.io import atomic_write_text
from fmnist.models import UnknownModelError
from fmnist.training.devices import resolve_device

# The `datapath` package beside this file: on sys.path already when this runs as a script.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from datapath.machine import environment, load_average
from datapath.mlflow_cost import bench_mlflow
from datapath.paths import ROOT
from datapath.report import render
from datapath.timing import bench_data, bench_training, make_setup, progress


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


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except DeviceError:
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
