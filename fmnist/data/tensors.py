"""Whole-dataset tensors on the training device, batched and augmented as tensors.

The uint8 images live on the device once; each batch is indexed, converted to float, normalised
and augmented there. No per-sample Python, no PIL.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fmnist.data.prepare import Arrays


@dataclass
class DeviceDataset:
    x: torch.Tensor  # uint8 [N, 1, 28, 28] on the device
    y: torch.Tensor  # int64 [N] on the device

    @classmethod
    def from_arrays(cls, arrays: Arrays, device: torch.device) -> DeviceDataset:
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


def random_zoom(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Scale each uint8 image about its centre by a random factor in [1 - amount, 1 + amount]."""
    if amount <= 0:
        return x
    return zoom(x, 1 + (torch.rand(x.shape[0], generator=generator, device=x.device) * 2 - 1) * amount)


def zoom(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Scale uint8 image i about its centre by scale[i] (> 1 enlarges), black fill."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale  # sampling a smaller window enlarges the image
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_erasing(x: torch.Tensor, p: float, max_area: float, generator: torch.Generator,
                   min_area: float = 0.02, max_aspect: float = 1 / 0.3) -> torch.Tensor:
    """Random erasing on normalised images: one rectangle per chosen image set to 0 (the data mean)."""
    if p <= 0:
        return x
    n, _, height, width = x.shape
    dev = x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + torch.rand(n, generator=generator, device=dev) * (hi - lo)

    chosen = uniform(0, 1) < p
    area = uniform(min_area, max_area) * height * width
    aspect = torch.exp(uniform(-math.log(max_aspect), math.log(max_aspect)))
    h = (area * aspect).sqrt().round().clamp(1, height)
    w = (area / aspect).sqrt().round().clamp(1, width)
    top = (uniform(0, 1) * (height - h + 1)).floor().view(n, 1, 1)
    left = (uniform(0, 1) * (width - w + 1)).floor().view(n, 1, 1)
    rows = torch.arange(height, device=dev).view(1, height, 1)
    cols = torch.arange(width, device=dev).view(1, 1, width)
    inside = ((rows >= top) & (rows < top + h.view(n, 1, 1)) & (cols >= left) & (cols < left + w.view(n, 1, 1)))
    return x.masked_fill((inside & chosen.view(n, 1, 1)).unsqueeze(1), 0.0)


class BatchAugment:
    """The recipe's augmentation: geometric ops on uint8 pixels (black fill), erasing after normalising."""

    def __init__(self, hflip: float = 0.0, translate: int = 0, zoom: float = 0.0, erasing: float = 0.0,
                 erasing_max_area: float = 0.33):
        self.hflip, self.translate, self.zoom = hflip, translate, zoom
        self.erasing, self.erasing_max_area = erasing, erasing_max_area

    @classmethod
    def from_config(cls, cfg) -> BatchAugment:
        return cls(cfg.hflip, cfg.translate, cfg.zoom, cfg.erasing, cfg.erasing_max_area)

    def pixels(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = random_hflip(x, self.hflip, generator)
        x = random_translate(x, self.translate, generator)
        return random_zoom(x, self.zoom, generator)

    def normalized(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_erasing(x, self.erasing, self.erasing_max_area, generator)


def train_batches(data: DeviceDataset, batch_size: int, generator: torch.Generator,
                  normalize: Normalizer, augment: BatchAugment | None = None
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch over every image; a last batch of a single image joins the one before (batch
    norm cannot train on one image)."""
    order = torch.randperm(len(data), generator=generator, device=generator.device).to(data.x.device)
    starts = list(range(0, len(data), batch_size))
    if len(starts) > 1 and len(data) - starts[-1] == 1:
        starts.pop()
    for start, end in zip(starts, starts[1:] + [len(data)]):
        idx = order[start:end]
        x = data.x[idx]
        if augment is None:
            yield normalize(x), data.y[idx]
            continue
        # Geometric ops on raw pixels, so shifted-in borders are black background, not the mean.
        x = normalize(augment.pixels(x, generator))
        yield augment.normalized(x, generator), data.y[idx]


def eval_batches(data: DeviceDataset, batch_size: int, normalize: Normalizer
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data), batch_size):
        yield normalize(data.x[start:start + batch_size]), data.y[start:start + batch_size]
