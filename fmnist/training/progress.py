"""What a training says while it runs: on a terminal a bar per epoch (batches, images/s, loss); in a
log (CI, `dvc repro` piped) one line per epoch with seconds, accuracies, lr and the run's ETA."""

from __future__ import annotations

import sys
from typing import TextIO

import torch
from tqdm import tqdm

from fmnist.core.runs import EpochRecord

LOSS_EVERY = 10  # batches between loss readings on the bar (each reading waits for the device)


class Progress:
    def __init__(self, name: str, epochs: int, steps_per_epoch: int, batch_size: int, stream: TextIO | None = None):
        self.name, self.epochs, self.steps, self.batch_size = name, epochs, steps_per_epoch, batch_size
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int) -> None:
        if self.tty:
            self.bar = tqdm(total=self.steps, desc=f"{self.name} epoch {epoch}/{self.epochs}", unit="batch",
                            leave=False, file=self.stream, dynamic_ncols=True)

    def see(self, index: int, loss: torch.Tensor) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if index % LOSS_EVERY == LOSS_EVERY - 1:  # not at batch 0: tqdm has no rate yet
            rate = self.bar.format_dict.get("rate") or 0.0
            self.bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate * self.batch_size:.0f}")

    def end_epoch(self, record: EpochRecord) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        remaining = (self.epochs - record.epoch) * record.cumulative_seconds / record.epoch
        test = f", test acc {record.test_acc:.4f}" if record.test_acc is not None else ""
        print(f"{self.name} epoch {record.epoch}/{self.epochs}: {record.epoch_seconds:.1f} s, train acc "
              f"{record.train_acc:.4f}, val acc {record.val_acc:.4f}{test}, lr {record.lr:.3g}, "
              f"ETA {_duration(remaining)}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
