"""Checkpoints: the best-validation weights plus everything needed to rebuild the classifier."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from fmnist.io import atomic_write_bytes
from fmnist.models import create_model
from fmnist.models.wrapper import NormalizedClassifier


def save_checkpoint(path: str | Path, *, arch: str, model_kwargs: dict[str, Any], num_classes: int,
                    state_dict: dict, mean: float, std: float, class_names: list[str], **extra: Any) -> Path:
    buf = io.BytesIO()
    torch.save({"arch": arch, "model_kwargs": model_kwargs, "num_classes": num_classes,
                "state_dict": state_dict, "mean": mean, "std": std, "class_names": class_names, **extra}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; run the train stage first (`dvc repro`)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: not a readable checkpoint ({err}); re-run the train stage") from err


def classifier_from_checkpoint(ckpt: dict) -> NormalizedClassifier:
    net = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], **ckpt["model_kwargs"])
    net.load_state_dict(ckpt["state_dict"])
    model = NormalizedClassifier(net, ckpt["mean"], ckpt["std"], ckpt["class_names"])
    return model.eval()
