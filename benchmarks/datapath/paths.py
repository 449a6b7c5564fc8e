"""The two data paths under test, and the data they serve.

Both serve the same training images in shuffled batches with the same augmentation (horizontal
flip p=HFLIP, translation up to TRANSLATE px with zero fill) and normalisation. An `EpochFn` returns
a fresh iterator over one epoch of (normalised images, labels) batches on the device.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from fmnist.data.fetch import OFFICIAL_FILES, TORCHVISION_SUBDIR
from fmnist.data.idx import read_pair
from fmnist.data.prepare import Arrays, normalisation_stats
from fmnist.data.tensors import BatchAugment, DeviceDataset, Normalizer, train_batches

ROOT = Path(__file__).resolve().parents[2]  # the repository
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HFLIP, TRANSLATE = 0.5, 2  # the augmentation both paths apply

Batch = tuple[torch.Tensor, torch.Tensor]
EpochFn = Callable[[], Iterator[Batch]]  # returns a fresh iterator over one epoch of batches


# ----------------------------------------------------------------------------- data

def shown(path: Path) -> str:
    """A path as the committed report shows it: relative to the project, never this machine's layout."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)  # outside the project (e.g. Debian's dataset folder): as given


def torchvision_root(raw_dir: Path, scratch: Path) -> tuple[Path, str]:
    """A root R such that torchvision's FashionMNIST finds R/FashionMNIST/raw/<name> (decompressed:
    its `_check_exists` looks for the names without .gz). The download stage's output if complete,
    else the .gz files (in raw_dir/FashionMNIST/raw, in raw_dir itself, or Debian's) decompressed
    under `scratch`."""
    if all((raw_dir / TORCHVISION_SUBDIR / name).is_file() for name in OFFICIAL_FILES):
        return raw_dir, shown(raw_dir / TORCHVISION_SUBDIR)
    for source in (raw_dir / TORCHVISION_SUBDIR, raw_dir, DEBIAN_DIR):
        if all((source / f"{name}.gz").is_file() for name in OFFICIAL_FILES):
            target = scratch / TORCHVISION_SUBDIR
            target.mkdir(parents=True, exist_ok=True)
            for name in OFFICIAL_FILES:
                with gzip.open(source / f"{name}.gz") as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            return scratch, f"{shown(source)} (.gz, decompressed to a temporary directory)"
    sys.exit(f"no Fashion-MNIST idx files in {raw_dir / TORCHVISION_SUBDIR}, {raw_dir} or {DEBIAN_DIR}: "
             "pass --raw-dir with the four .gz files, run `dvc repro download`, or `make setup` for Debian's "
             "dataset-fashion-mnist")


def load_train(root: Path, limit: int | None) -> Arrays:
    raw = root / TORCHVISION_SUBDIR
    x, y = read_pair(raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte")
    return Arrays(x[:limit], y[:limit].astype(np.int64))


def normalisation(stats_path: Path, arrays: Arrays, limited: bool) -> tuple[float, float, str]:
    if stats_path.is_file() and not limited:
        stats = json.loads(stats_path.read_text())
        return stats["mean"], stats["std"], shown(stats_path)
    stats = normalisation_stats(arrays.x)
    return stats["mean"], stats["std"], "computed from the benchmark's images"


# ----------------------------------------------------------------------------- the two paths

def standard_epochs(root: Path, mean: float, std: float, limit: int | None, batch_size: int, workers: int,
                    device: torch.device, seed: int, augment: bool = True, persistent_workers: bool = False
                    ) -> EpochFn:
    """torchvision's dataset behind a DataLoader, as a PyTorch user writes it; `augment` adds the flip
    and shift both paths apply, `persistent_workers` keeps the workers from one epoch to the next."""
    augmentation = [transforms.RandomHorizontalFlip(HFLIP), transforms.RandomCrop(28, padding=TRANSLATE)]
    transform = transforms.Compose([*(augmentation if augment else []), transforms.ToTensor(),
                                    transforms.Normalize((mean,), (std,))])
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True, download=False, transform=transform)
    if limit is not None:
        dataset.data, dataset.targets = dataset.data[:limit], dataset.targets[:limit]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=persistent_workers and workers > 0,
                        generator=torch.Generator().manual_seed(seed))

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
