"""How the device runs a network: autocast dtype, memory format, compilation; and seeding.

Precision is resolved here and only here: the plan asks `Runtime.for_recipe` once per run.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fmnist.core.errors import DeviceError
from fmnist.core.recipe import RecipeConfig
from fmnist.training.devices import has_native_bf16


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed every generator, and choose between bit-exact kernels and cuDNN's autotuned (faster) ones.

    Both choices are set either way: a process that trains a deterministic recipe and then another must
    not keep the first one's settings."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a recipe's `precision` on `device` (None = fp32): `auto` is bf16 where the
    device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX/Arm BF16), fp16 on a CUDA GPU
    without it (T4, V100: fp16 tensor cores, with a gradient scaler), fp32 elsewhere."""
    if precision == "fp32":
        return None
    native = has_native_bf16(device)
    if precision == "bf16" and not native:
        where = "this GPU" if device.type == "cuda" else f"this {device.type.upper()}"
        raise DeviceError(f"precision bf16 needs native bf16 arithmetic, which {where} lacks (it would be emulated, "
                          "slower than fp32); set the recipe's precision to fp32 or auto")
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError(f"precision fp16 is for CUDA GPUs; on this {device.type.upper()} it would be emulated, "
                          "slower than fp32; set the recipe's precision to fp32 or auto")
    if precision == "bf16" or (precision == "auto" and native):
        return torch.bfloat16
    if precision == "fp16" or (precision == "auto" and device.type == "cuda"):
        return torch.float16
    return None


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"

    @classmethod
    def for_recipe(cls, recipe: RecipeConfig, device: torch.device) -> Runtime:
        return cls(device, resolve_precision(recipe.precision, device), recipe.channels_last, recipe.compile)

    @property
    def precision(self) -> str:
        """The precision actually used, as recorded on the run."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "fp32")

    @property
    def scales_gradients(self) -> bool:
        """fp16 gradients underflow unless the loss is scaled up first; bf16 has fp32's range and needs no scaling."""
        return self.amp_dtype == torch.float16

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is a no-op unless fp16 needs it, so every precision trains through the same steps."""
        return torch.amp.GradScaler(self.device.type, enabled=self.scales_gradients)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The module to call in the loop; `model` itself keeps the weights (and the clean state_dict)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return torch.compile(model, backend=self.compile_backend) if self.compile else model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x
