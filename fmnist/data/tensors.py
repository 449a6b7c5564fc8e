"""Whole-dataset tensors on the training device, batched and augmented as tensors.

The uint8 images live on the device once; each batch is indexed, converted to float, normalised
and augmented there. No per-sample Python, no PIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from fmnist.data.prepare import Arrays


@dataclass
class DeviceDataset:
    x: torch.Tensor  # uint8 [N, 1, 28, 28] on the device
    y: torch.Tensor  # int64 [N] on the device

    @classmethod
    def from_arrays(cls, arrays: Arrays, device: torch.device) -> "DeviceDataset":
        x = torch.from_numpy(arrays.x).unsqueeze(1).to(device)
        y = torch.from_numpy(arrays.y).to(device)
        return cls(x, y)

    def __len__(self) -> int:
        return len(self.y)


class Normalizer:
    """uint8 pixels -> float, standardised with the training data's statistics."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return (x_uint8.float() / 255.0 - self.mean) / self.std


def random_hflip(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    if p <= 0:
        return x
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `pad` pixels in each direction, filling with zeros."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return out.gather(3, cols)


class BatchAugment:
    def __init__(self, hflip: float = 0.0, translate: int = 0):
        self.hflip, self.translate = hflip, translate

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = random_hflip(x, self.hflip, generator)
        return random_translate(x, self.translate, generator)


def train_batches(data: DeviceDataset, batch_size: int, generator: torch.Generator,
                  normalize: Normalizer, augment: BatchAugment | None = None
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch; the last partial batch is kept."""
    order = torch.randperm(len(data), generator=generator, device=generator.device).to(data.x.device)
    for start in range(0, len(data), batch_size):
        idx = order[start:start + batch_size]
        x = data.x[idx]
        if augment is not None:
            # On raw pixels, so translation fills with black background, not the mean.
            x = augment(x, generator)
        yield normalize(x), data.y[idx]


def eval_batches(data: DeviceDataset, batch_size: int, normalize: Normalizer
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data), batch_size):
        yield normalize(data.x[start:start + batch_size]), data.y[start:start + batch_size]
