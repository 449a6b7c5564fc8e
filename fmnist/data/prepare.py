"""Preprocess (IDX -> compact uint8 arrays + normalisation statistics) and the seeded split."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fmnist.core.errors import DataError
from fmnist.core.io import save_npz, write_json
from fmnist.data.fetch import raw_file
from fmnist.data.idx import read_pair

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray  # uint8 [N, 28, 28]
    y: np.ndarray  # int64 [N], 0..num_classes-1

    def __len__(self) -> int:
        return len(self.y)


def select_classes(arrays: Arrays, classes: list[int] | None) -> Arrays:
    """Keep only `classes` (original indices), relabelled 0..k-1 in the given order."""
    if classes is None:
        return arrays
    keep = np.isin(arrays.y, classes)
    remap = np.full(10, -1, dtype=np.int64)
    remap[np.asarray(classes)] = np.arange(len(classes))
    return Arrays(arrays.x[keep], remap[arrays.y[keep]])


def normalisation_stats(x: np.ndarray) -> dict[str, float]:
    scaled = x.astype(np.float64) / 255.0
    return {"mean": float(scaled.mean()), "std": float(scaled.std())}


OFFICIAL_COUNTS = {"train": 60000, "t10k": 10000}


def preprocess(raw_dir: str | Path, out_dir: str | Path, classes: list[int] | None,
               expected_counts: dict[str, int | None] = OFFICIAL_COUNTS) -> dict:
    """Parse and validate the raw IDX files, write train/test npz and stats.json."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    train = _read(raw_dir, "train", expected_counts["train"])
    test = _read(raw_dir, "t10k", expected_counts["t10k"])
    train, test = select_classes(train, classes), select_classes(test, classes)
    names = [CLASS_NAMES[c] for c in (classes or range(10))]
    stats = {**normalisation_stats(train.x), "classes": names, "original_class_ids": list(classes or range(10)),
             "train_count": len(train), "test_count": len(test)}
    save_npz(out_dir / "train.npz", x=train.x, y=train.y)
    save_npz(out_dir / "test.npz", x=test.x, y=test.y)
    write_json(out_dir / "stats.json", stats)
    return stats


def _read(raw_dir: Path, prefix: str, count: int | None) -> Arrays:
    x, y = read_pair(raw_file(raw_dir, f"{prefix}-images-idx3-ubyte"),
                     raw_file(raw_dir, f"{prefix}-labels-idx1-ubyte"), expected_count=count)
    return Arrays(x, y.astype(np.int64))


def load_arrays(path: str | Path) -> Arrays:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the earlier pipeline stages first (`dvc repro`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"x", "y"} - set(data.files)
            if missing:
                raise ValueError(f"missing arrays {sorted(missing)}")
            x, y = data["x"], data["y"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable array file ({err}); re-run the stage that writes it") from None
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
        raise DataError(f"{path}: expected uint8 images [N, 28, 28] and N labels, got {x.dtype} {x.shape} "
                         f"and {y.shape}; re-run the stage that writes it")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: labels must be class indices 0-9, found {int(y.min())}..{int(y.max())}; "
                        "re-run the stage that writes it (`dvc repro --force preprocess`)")
    return Arrays(x, y.astype(np.int64))


def stratified_split(arrays: Arrays, val_fraction: float, seed: int) -> tuple[Arrays, Arrays]:
    idx = np.arange(len(arrays))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed,
                                          stratify=arrays.y, shuffle=True)
    train_idx.sort()
    val_idx.sort()
    return Arrays(arrays.x[train_idx], arrays.y[train_idx]), Arrays(arrays.x[val_idx], arrays.y[val_idx])


def split(prepared_train: str | Path, out_dir: str | Path, val_fraction: float, seed: int) -> dict:
    arrays = load_arrays(prepared_train)
    train, val = stratified_split(arrays, val_fraction, seed)
    out_dir = Path(out_dir)
    save_npz(out_dir / "train.npz", x=train.x, y=train.y)
    save_npz(out_dir / "val.npz", x=val.x, y=val.y)
    return {"train": len(train), "val": len(val)}


def stratified_subset(arrays: Arrays, size: int | None, seed: int) -> Arrays:
    """A seeded, stratified subset of at most `size` samples (the quick profile's budget)."""
    if size is None or size >= len(arrays):
        return arrays
    keep, _ = train_test_split(np.arange(len(arrays)), train_size=size, random_state=seed,
                               stratify=arrays.y, shuffle=True)
    keep.sort()
    return Arrays(arrays.x[keep], arrays.y[keep])
