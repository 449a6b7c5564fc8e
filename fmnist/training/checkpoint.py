"""Checkpoints: the kept weights (or fitted estimator) plus everything needed to rebuild the classifier."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmnist.core.errors import OutputError
from fmnist.core.io import atomic_write_bytes

CHECKPOINT_FILE = "model.pt"
ESTIMATOR_FILE = "estimator.pkl"


def save_checkpoint(path: str | Path, *, arch: str, network: str, model_kwargs: dict[str, Any], num_classes: int,
                    class_names: list[str], estimator: Any = None, **extra: Any) -> Path:
    """torch.save of a plain dict (loadable with weights_only=True); a scikit-learn estimator is pickled
    beside it, since only our own train stage writes it."""
    path = Path(path)
    if estimator is not None:
        pickled = pickle.dumps(estimator)
        atomic_write_bytes(path.with_name(ESTIMATOR_FILE), pickled)
        # The checkpoint (loaded without unpickling code) vouches for the pickle beside it.
        extra.update(estimator_file=ESTIMATOR_FILE, estimator_sha256=hashlib.sha256(pickled).hexdigest())
    buf = io.BytesIO()
    torch.save({"arch": arch, "network": network, "model_kwargs": model_kwargs, "num_classes": num_classes,
                "class_names": class_names, **extra}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"{path}: checkpoint not found; run the train stage first (`dvc repro`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt file
        raise OutputError(f"{path}: not a readable checkpoint ({err}); re-run the train stage") from None
    if "estimator_file" in ckpt:
        pickled = path.parent / ckpt["estimator_file"]
        if not pickled.is_file():
            raise OutputError(f"{pickled}: missing beside its checkpoint {path}; re-run the train stage")
        data = pickled.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != ckpt.get("estimator_sha256"):
            raise OutputError(f"{pickled}: its SHA-256 {digest[:12]}... is not the one its checkpoint recorded "
                              f"({str(ckpt.get('estimator_sha256'))[:12]}...): it was changed or swapped, so it is "
                              "not unpickled; re-run the train stage")
        try:
            ckpt["estimator"] = pickle.loads(data)
        except Exception as err:  # pickle raises several types for a corrupt file
            raise OutputError(f"{pickled}: not a readable estimator ({err}); re-run the train stage") from None
    return ckpt


def classifier_from_checkpoint(ckpt: dict) -> nn.Module:
    from fmnist.training.trainers import checkpoint_network, trainer_for

    return trainer_for(checkpoint_network(ckpt)).classifier(ckpt)
