"""Multi-layer perceptron on flattened pixels (784-256-128-10 by default)."""

from __future__ import annotations

from torch import nn


def mlp(num_classes: int = 10, hidden: tuple[int, ...] | list[int] = (256, 128), dropout: float = 0.2) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
