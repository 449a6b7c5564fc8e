"""Optimisers and learning-rate schedules from a recipe."""

from __future__ import annotations

import torch
from torch import nn

from fmnist.config import OptimizerConfig, SchedulerConfig


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class EpochScheduler:
    """One interface over torch's schedulers, stepped once per epoch with the monitored value."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, mode: str):
        self.name = cfg.name
        self.optimizer = optimizer
        if cfg.name == "plateau":
            self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr)
        elif cfg.name == "step":
            self.inner = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.factor)
        elif cfg.name == "cosine":
            self.inner = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr)
        else:
            self.inner = None

    def step(self, monitored: float) -> None:
        if self.inner is None:
            return
        if self.name == "plateau":
            self.inner.step(monitored)
        else:
            self.inner.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])
