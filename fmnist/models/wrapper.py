"""A self-contained classifier: raw pixels in [0, 1] -> logits, normalisation built in."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def pixels_to_input(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 images [N, 28, 28] -> the classifier's input: float32 [N, 1, 28, 28] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).float().div(255.0).unsqueeze(1)


class NormalizedClassifier(nn.Module):
    """Wraps a trained network so callers pass images as float32 [N, 1, 28, 28] in [0, 1]."""

    def __init__(self, net: nn.Module, mean: float, std: float, class_names: list[str]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.class_names = list(class_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
