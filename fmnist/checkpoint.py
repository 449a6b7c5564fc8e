"""Checkpoints: the kept weights (or fitted estimator) plus everything needed to rebuild the classifier."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from fmnist.io import atomic_write_bytes
from fmnist.models import create_model
from fmnist.models.wrapper import EstimatorClassifier, NormalizedClassifier

ESTIMATOR_FILE = "estimator.pkl"


def save_checkpoint(path: str | Path, *, arch: str, model_kwargs: dict[str, Any], num_classes: int,
                    class_names: list[str], estimator: Any = None, **extra: Any) -> Path:
    """torch.save of a plain dict (loadable with weights_only=True); a scikit-learn estimator is pickled
    beside it, since only our own train stage writes it."""
    path = Path(path)
    if estimator is not None:
        atomic_write_bytes(path.with_name(ESTIMATOR_FILE), pickle.dumps(estimator))
        extra["estimator_file"] = ESTIMATOR_FILE
    buf = io.BytesIO()
    torch.save({"arch": arch, "model_kwargs": model_kwargs, "num_classes": num_classes,
                "class_names": class_names, **extra}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; run the train stage first (`dvc repro`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if "estimator_file" in ckpt:
            ckpt["estimator"] = pickle.loads((path.parent / ckpt["estimator_file"]).read_bytes())
        return ckpt
    except Exception as err:  # torch and pickle raise several types for corrupt files
        raise ValueError(f"{path}: not a readable checkpoint ({err}); re-run the train stage") from err


def classifier_from_checkpoint(ckpt: dict) -> NormalizedClassifier | EstimatorClassifier:
    if "estimator" in ckpt:
        return EstimatorClassifier(ckpt["estimator"], ckpt["class_names"]).eval()
    net = create_model(ckpt["arch"], num_classes=ckpt["num_classes"], **{**ckpt["model_kwargs"], **_no_download(ckpt)})
    net.load_state_dict(ckpt["state_dict"])
    model = NormalizedClassifier(net, ckpt["mean"], ckpt["std"], ckpt["class_names"], ckpt.get("tta_flip", False))
    return model.eval()


def _no_download(ckpt: dict) -> dict:
    """A transfer model's checkpoint holds all its weights: rebuilding it must not fetch ImageNet's."""
    from fmnist.models import model_info

    return {"pretrained": False} if "pretrained" in model_info(ckpt["arch"]).options else {}
