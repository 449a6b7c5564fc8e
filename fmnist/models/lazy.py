"""Import torchvision and scikit-learn on first use: every pipeline process imports the registry,
and most build neither a torchvision model nor a baseline (each import costs seconds)."""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


torchvision_models = LazyModule("torchvision.models")
