"""`fmnist ensemble --experiment NAME`: a soft-voting ensemble of the experiment's trained networks, its members
chosen on validation alone (fmnist.reporting.ensemble), logged as an MLflow run of its own that names the runs it
combines. It needs the members' saved logits (`evaluation/logits.npz`, which the offline trainer writes)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run

from fmnist import tracking
from fmnist.core.errors import StoreError
from fmnist.reporting.ensemble import Ensemble, Member, accuracy, choose, probabilities

LOGITS = "evaluation/logits.npz"
MEMBERS_TAG = "fmnist.ensemble.members"


def candidate_runs(client: MlflowClient, experiment: str) -> list[Run]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "(none)"
        raise StoreError(f"no MLflow experiment '{experiment}' at this tracking URI; experiments here: {names}")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.evaluated = 'true' and tags.kind = 'torch' "
                              "and attributes.status = 'FINISHED'", max_results=5000)
    return [r for r in runs if r.data.tags.get("fmnist.stage", "").startswith("train@")
            and "fmnist.probe" not in r.data.tags]


def load_members(client: MlflowClient, runs: list[Run]) -> tuple[list[Member], np.ndarray, np.ndarray]:
    """Every run that kept its logits; all must have scored the same validation and test images."""
    members, labels = [], None
    scratch = Path(tempfile.mkdtemp(prefix="fmnist-ensemble-"))
    for run in runs:
        if not any(f.path == LOGITS for f in client.list_artifacts(run.info.run_id, "evaluation")):
            continue
        with np.load(client.download_artifacts(run.info.run_id, LOGITS, str(scratch))) as saved:
            ys = (saved["val_y"], saved["test_y"])
            if labels is None:
                labels = ys
            elif not all(np.array_equal(a, b) for a, b in zip(labels, ys)):
                raise StoreError(f"run {run.info.run_id} scored other validation or test images than the others; "
                                 "ensemble runs of one data split and test subset (one profile's experiment)")
            members.append(Member(run.info.run_id, run.info.run_name or run.info.run_id,
                                  saved["val_logits"].astype(np.float32), saved["test_logits"].astype(np.float32)))
    if len(members) < 2:
        raise StoreError(f"{len(members)} run(s) with saved logits ({LOGITS}); an ensemble needs two or more: train "
                         "them with the offline command (benchmarks/gpu_run.py), which keeps them")
    return members, labels[0], labels[1]


def ensemble_experiment(experiment: str, max_members: int = 5, root: Path = Path(".")) -> tuple[Ensemble, str]:
    tracking.configure(root, must_exist=True)
    client = MlflowClient()
    members, val_y, test_y = load_members(client, candidate_runs(client, experiment))
    chosen = choose(members, val_y, test_y, max_members)
    tags = {**tracking.base_tags("ensemble", root=root), MEMBERS_TAG: ",".join(m.run_id for m in chosen.members),
            "kind": "ensemble"}
    with tracking.tracked_run(experiment, run_name=f"ensemble of {len(chosen.members)}", tags=tags,
                              root=root) as run:
        tracking.log_params({"members": ",".join(m.name for m in chosen.members), "n_members": len(chosen.members),
                             "candidates": len(members), "selection": "greedy forward on validation accuracy",
                             "max_members": max_members})
        mlflow.log_metrics({"ensemble_val_acc": chosen.val_acc, "ensemble_test_acc": chosen.test_acc,
                            "n_val": len(val_y), "n_test": len(test_y)})
        for i, m in enumerate(chosen.members, start=1):
            mlflow.log_metrics({f"member_{i}_val_acc": accuracy(probabilities(m.val_logits), val_y),
                                f"member_{i}_test_acc": accuracy(probabilities(m.test_logits), test_y)})
    return chosen, run.info.run_id
