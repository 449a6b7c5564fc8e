"""Things recorded during training for people to look at, beyond the metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fmnist.core.io import save_npz
from fmnist.core.runs import EpochRecord

PIXELS = 28 * 28


def first_pixel_layer(model: nn.Module) -> nn.Linear | None:
    """The first dense layer, if it reads the raw 784 pixels (an MLP); None otherwise."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return None
        if isinstance(module, nn.Linear):
            return module if module.in_features == PIXELS else None
    return None


class UnitWeightRecorder:
    """Snapshots, after each epoch, the incoming weights of a few units of the first dense layer."""

    def __init__(self, layer: nn.Linear, count: int = 8):
        self.layer = layer
        self.units = np.unique(np.linspace(0, layer.out_features - 1, count).round().astype(int))
        self.epochs: list[int] = []
        self.snapshots: list[np.ndarray] = []

    def __call__(self, record: EpochRecord) -> None:
        with torch.no_grad():
            weights = self.layer.weight[torch.as_tensor(self.units, device=self.layer.weight.device)]
        self.epochs.append(record.epoch)
        self.snapshots.append(weights.float().cpu().numpy())

    def state(self) -> dict:
        return {"epochs": list(self.epochs), "snapshots": list(self.snapshots)}

    def restore(self, state: dict) -> None:
        self.epochs, self.snapshots = list(state["epochs"]), list(state["snapshots"])

    def save(self, path: str | Path) -> Path:
        return save_npz(path, weights=np.stack(self.snapshots), epochs=np.asarray(self.epochs), units=self.units)
