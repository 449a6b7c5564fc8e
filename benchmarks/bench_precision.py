"""Benchmark: training and evaluation throughput per architecture in fp32, bf16 autocast, and bf16 +
channels_last, side by side, on this machine (`make bench`; run it on a quiet machine).

Why: `precision: auto` trains in bf16 autocast on CPUs with native bf16 (AVX512-BF16, AMX) and on
CUDA; this table is the evidence that it pays, per architecture, and the figure the `cpu` profile's
budgets are sized from.

What is timed: the pipeline's own optimiser step (`fmnist.training.steps.train_steps`: autocast
forward, fp32 loss, backward, AdamW step) on batches of --batch-size random 28x28 images (speed does
not depend on the pixel values), after --warmup batches; and the pipeline's evaluation pass
(`fmnist.training.steps.evaluate`, fp32 logits) over --eval-images images in batches of
--eval-batch-size. One run per cell, the modes of one architecture in turn. It is a measurement
script, never a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from datapath.report import environment, load_average  # noqa: E402

from fmnist.core.io import atomic_write_text  # noqa: E402
from fmnist.data.tensors import DeviceDataset, Normalizer  # noqa: E402
from fmnist.models import create_model  # noqa: E402
from fmnist.training.devices import has_native_bf16, resolve_device  # noqa: E402
from fmnist.training.runtime import Runtime  # noqa: E402
from fmnist.training.steps import evaluate, train_steps  # noqa: E402

MODES = {"fp32": (None, False), "bf16": (torch.bfloat16, False), "bf16 + channels_last": (torch.bfloat16, True)}
DEFAULT_MODELS = "mlp:40,cnn1:40,cnn3:30,cnn4:30,qstp_cnn5:12,fastcnn:40,basic_cnn:20,mini_vgg:12,wrn16_4:6," \
                 "resnet18:6,mobilenet_v2:8,shufflenet_v2:10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/bench_precision.md")
    p.add_argument("--models", default=DEFAULT_MODELS, help="NAME:BATCHES,... timed training batches per model")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def _images(n: int, device: torch.device, seed: int = 0) -> DeviceDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return DeviceDataset(x.to(device), torch.randint(0, 10, (n,), generator=g).to(device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(arch: str, runtime: Runtime, batches: int, args) -> tuple[float, float]:
    """(training images/s, evaluation images/s) of `arch` under `runtime`."""
    torch.manual_seed(0)
    model = create_model(arch).to(runtime.device)
    net = runtime.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    norm = Normalizer(0.286, 0.353)
    data = _images(args.batch_size * (batches + args.warmup), runtime.device)
    xs = norm(data.x)
    chunks = list(zip(xs.split(args.batch_size), data.y.split(args.batch_size)))
    train_steps(net, chunks[:args.warmup], optimizer, runtime)
    _sync(runtime.device)
    start = time.perf_counter()
    train_steps(net, chunks[args.warmup:], optimizer, runtime)
    _sync(runtime.device)
    train_rate = batches * args.batch_size / (time.perf_counter() - start)
    test = _images(args.eval_images, runtime.device, seed=1)
    evaluate(net, _images(args.eval_batch_size, runtime.device), norm, args.eval_batch_size, runtime)  # warm-up
    start = time.perf_counter()
    evaluate(net, test, norm, args.eval_batch_size, runtime)
    _sync(runtime.device)
    return train_rate, args.eval_images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    load_before = load_average()
    rows = []
    for item in args.models.split(","):
        arch, _, batches = item.partition(":")
        rates = {}
        for mode, (dtype, channels_last) in MODES.items():
            rates[mode] = time_mode(arch, Runtime(device, dtype, channels_last), int(batches or 10), args)
            print(f"{arch:14s} {mode:22s} train {rates[mode][0]:8.1f} img/s  eval {rates[mode][1]:8.1f} img/s",
                  flush=True)
        rows.append((arch, rates))
    lines = ["# Precision on this machine: fp32, bf16 autocast, bf16 + channels_last", "",
             "Written by `benchmarks/bench_precision.py` (its docstring says what is timed and how). "
             f"Native bf16 on {device}: {'yes' if has_native_bf16(device) else 'no'} (what `precision: auto` "
             "follows).", "", "| | |", "|---|---|",
             *[f"| {k} | {v} |" for k, v in environment(device, load_before)], "",
             f"Training: images/s of the pipeline's optimiser step, batch {args.batch_size}. Evaluation: images/s of "
             f"its evaluation pass (fp32 logits), batch {args.eval_batch_size}. Speed-up: against fp32.", "",
             "| architecture | " + " | ".join(f"train {m}" for m in MODES) + " | bf16+cl speed-up | "
             + " | ".join(f"eval {m}" for m in MODES) + " | eval speed-up |",
             "|---" * (2 * len(MODES) + 3) + "|"]
    for arch, rates in rows:
        train = [rates[m][0] for m in MODES]
        ev = [rates[m][1] for m in MODES]
        lines.append(f"| {arch} | " + " | ".join(f"{r:,.0f}" for r in train) + f" | {train[-1] / train[0]:.2f}x | "
                     + " | ".join(f"{r:,.0f}" for r in ev) + f" | {ev[-1] / ev[0]:.2f}x |")
    atomic_write_text(ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
