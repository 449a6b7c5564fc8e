"""Small, fast networks for time-to-accuracy, after the fastest CIFAR-10 setups (airbench).

A conv stem, then blocks of conv → max pool → batch norm → GELU (+ more convs at the pooled size);
28 → 14 → 7 → 3 pixels; global max pool and a linear head whose logits are scaled down, which
with label smoothing keeps early training stable at high learning rates. `speedrun` is the GPU
configuration (wide, two convs per block); `fastcnn` the CPU one (narrow, one conv per block).
"""

from __future__ import annotations

from torch import nn


def _block(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                               nn.BatchNorm2d(c_out), nn.GELU()]
    for _ in range(convs - 1):
        layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]
    return layers


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _speed_net(num_classes: int, stem: int, widths: tuple[int, ...] | list[int], convs_per_block: int,
               logit_scale: float) -> nn.Module:
    if len(widths) != 3 or min(widths) < 1 or stem < 1 or convs_per_block < 1:
        raise ValueError(f"need stem >= 1, three block widths >= 1 and convs_per_block >= 1; got stem={stem}, "
                         f"widths={list(widths)}, convs_per_block={convs_per_block}")
    layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.GELU()]
    c_in = stem
    for width in widths:
        layers += _block(c_in, width, convs_per_block)
        c_in = width
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes, bias=False),
                         Scale(logit_scale))


def speedrun(num_classes: int = 10, stem: int = 32, widths: tuple[int, ...] | list[int] = (64, 256, 256),
             convs_per_block: int = 2, logit_scale: float = 1 / 9) -> nn.Module:
    """GPU time-to-accuracy network (about 1.9M parameters)."""
    return _speed_net(num_classes, stem, widths, convs_per_block, logit_scale)


def fastcnn(num_classes: int = 10, stem: int = 16, widths: tuple[int, ...] | list[int] = (32, 64, 128),
            convs_per_block: int = 1, logit_scale: float = 1 / 9) -> nn.Module:
    """CPU time-to-accuracy network (about 0.1M parameters): the same layout, narrow, one conv per block."""
    return _speed_net(num_classes, stem, widths, convs_per_block, logit_scale)
