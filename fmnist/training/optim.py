"""Optimisers, learning-rate schedules and stochastic weight averaging from a recipe."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel

from fmnist.core.errors import ConfigError
from fmnist.core.recipe import OptimizerConfig, SchedulerConfig, SwaConfig

PER_BATCH_SCHEDULES = ("onecycle", "cyclic")


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """The recipe's optimiser over the parameters that currently require gradients."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr if lr is None else lr
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


class LrSchedule:
    """One interface over torch's schedulers: `after_batch` every step, `after_epoch` with the monitored value.

    onecycle and cyclic move the learning rate every batch; the others once per epoch.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int,
                 steps_per_epoch: int, mode: str):
        self.name = cfg.name
        self.optimizer = optimizer
        base_lr = float(optimizer.param_groups[0]["lr"])
        sched = torch.optim.lr_scheduler
        if cfg.name == "plateau":
            self.inner = sched.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience,
                                                 min_lr=cfg.min_lr)
        elif cfg.name == "step":
            self.inner = sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.factor)
        elif cfg.name == "multistep":
            self.inner = sched.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.factor)
        elif cfg.name == "cosine":
            self.inner = sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr)
        elif cfg.name == "onecycle":
            # Starts at the optimiser's lr, peaks at max_lr after pct_start of the steps, then anneals.
            total = epochs * steps_per_epoch
            if min(total * cfg.pct_start, total * (1 - cfg.pct_start)) < 2:  # torch divides by zero below that
                raise ConfigError(f"scheduler: a one-cycle schedule over {total} optimiser steps is too short for "
                                  f"pct_start {cfg.pct_start}; train on more images or epochs, or use another "
                                  "scheduler")
            self.inner = sched.OneCycleLR(optimizer, max_lr=cfg.max_lr, total_steps=epochs * steps_per_epoch,
                                          pct_start=cfg.pct_start, div_factor=cfg.max_lr / base_lr,
                                          cycle_momentum=False)
        elif cfg.name == "cyclic":
            self.inner = sched.CyclicLR(optimizer, base_lr=base_lr, max_lr=cfg.max_lr, mode="triangular",
                                        step_size_up=max(1, round(cfg.cycle_epochs * steps_per_epoch)),
                                        cycle_momentum=False)
        else:
            self.inner = None

    def after_batch(self) -> None:
        if self.inner is not None and self.name in PER_BATCH_SCHEDULES:
            self.inner.step()

    def after_epoch(self, monitored: float) -> None:
        if self.inner is None or self.name in PER_BATCH_SCHEDULES:
            return
        if self.name == "plateau":
            self.inner.step(monitored)
        else:
            self.inner.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def phase_start_epoch(share: float, epochs: int) -> int:
    """The first epoch after `share` of `epochs` (at least one epoch before it)."""
    return max(2, math.floor(share * epochs) + 1)


class WeightAverager:
    """SWA: from its first epoch, anneal to a constant lr and average the weights after every epoch."""

    def __init__(self, cfg: SwaConfig, epochs: int):
        self.cfg = cfg
        self.start_epoch = min(epochs, max(1, math.floor(cfg.start * epochs) + 1))
        self.model: AveragedModel | None = None
        self.scheduler: SWALR | None = None

    def active(self, epoch: int) -> bool:
        return epoch >= self.start_epoch

    def begin(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = AveragedModel(model)
        self.scheduler = SWALR(optimizer, swa_lr=self.cfg.lr, anneal_epochs=self.cfg.anneal_epochs,
                               anneal_strategy="cos")

    def after_epoch(self, model: nn.Module) -> None:
        self.model.update_parameters(model)
        self.scheduler.step()


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches) -> None:
    """Batch-norm running statistics as the plain average over `batches` (the averaged weights never saw any)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {}
    for bn in norms:
        bn.reset_running_stats()
        momenta[bn] = bn.momentum
        bn.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    for x in batches:
        model(x)
    for bn, momentum in momenta.items():
        bn.momentum = momentum
    model.train(was_training)
