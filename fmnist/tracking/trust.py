"""Load only what we wrote: the logged model's pickled weights carry a SHA-256, recorded on its
training run when it is logged and checked before anything is unpickled.

MLflow's safe `pt2` format (torch.export) cannot hold our classifiers: a scikit-learn baseline is an
estimator behind an nn.Module, and the networks' test-time flips and Shake-Shake's custom autograd
are not exportable graphs; so the model stays a pickle, and the hash is what makes loading it safe.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from fmnist.core.errors import StoreError
from fmnist.core.io import tree_sha256

DIGEST_TAG = "fmnist.model_sha256"


def folder_digest(folder: Path) -> str:
    """SHA-256 over every file of a logged model: the pickle, the MLmodel file that names it, and the code
    folder that is put on sys.path when it is loaded. Left out: the registry's `registered_model_meta`
    (name and version, added when a registered model is downloaded; never executed)."""
    return tree_sha256(folder, skip=("registered_model_meta",))


def record_digest(model_uri: str, run_id: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        digest = folder_digest(local)
    MlflowClient().set_tag(run_id, DIGEST_TAG, digest)
    return digest


def source_run(client: MlflowClient, model_uri: str) -> str | None:
    """The training run behind `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `models:/m-ID` or `runs:/ID/...`."""
    if match := re.fullmatch(r"runs:/([^/]+)/.*", model_uri):
        return match.group(1)
    if match := re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri):
        return client.get_logged_model(match.group(1)).source_run_id
    if match := re.fullmatch(r"models:/([^/@]+)@(.+)", model_uri):
        return client.get_model_version_by_alias(match.group(1), match.group(2)).run_id
    if match := re.fullmatch(r"models:/([^/@]+)/(\d+)", model_uri):
        return client.get_model_version(match.group(1), match.group(2)).run_id
    return None


def load_verified(model_uri: str, allow_unverified: bool = False) -> Any:
    """The torch model at `model_uri`, unpickled only if its files hash to what its run recorded."""
    import mlflow.pytorch

    client = MlflowClient()
    try:
        run_id = source_run(client, model_uri)
        expected = client.get_run(run_id).data.tags.get(DIGEST_TAG) if run_id else None
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            actual = folder_digest(local)
            if expected is None and not allow_unverified:
                raise StoreError(f"{model_uri}: no SHA-256 recorded by fmnist for this model, so it is not "
                                 "unpickled; pass --allow-unverified only for a model you trust")
            if expected is not None and actual != expected:
                raise StoreError(f"{model_uri}: its files hash to {actual[:12]}..., not the {expected[:12]}... "
                                 "its training run recorded: they were changed or swapped, so they are not "
                                 "unpickled; retrain or re-register the model")
            return mlflow.pytorch.load_model(str(local), map_location="cpu")
    except StoreError:
        raise
    except Exception as err:  # MLflow raises several types for a missing or unreadable model
        raise StoreError(f"cannot load model {model_uri} from {mlflow.get_tracking_uri()}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. Run the pipeline first "
                         "(it registers the champion), or pass --model URI.") from None
