"""The real DAG, `dvc repro`, on a tiny budget in a temporary copy of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT

pytestmark = pytest.mark.e2e
DATASET = Path("/usr/share/datasets/fashion-mnist")
TOP_LEVEL_SKIP = {".venv", ".git", "data", "models", "metrics", "plots", "reports", "mlflow.db", "mlartifacts",
                  "mlruns", "dvc.lock", ".pytest_cache", ".whl"}


def skip_outputs(directory, names):
    """Copy the sources only: no outputs, caches or environments of the working copy."""
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(directory) == ROOT:
        skip |= TOP_LEVEL_SKIP & set(names)
    if Path(directory) == ROOT / ".dvc":
        skip |= {"cache", "tmp"} & set(names)
    return skip


def sh(*cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    if not (DATASET / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{DATASET} missing: run `make setup` (installs Debian's dataset-fashion-mnist)")
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    shutil.copytree(ROOT, repo, ignore=skip_outputs)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "quick"
    params["architectures"] = ["mlp", "cnn4"]
    params["download"]["mirrors"] = []  # offline: the local copy only
    params["split"]["val_fraction"] = 0.05
    params["recipes"]["mlp"]["quick"] = {"epochs": 2, "train_subset": 3000}
    params["recipes"]["cnn4"]["quick"] = {"epochs": 1, "train_subset": 500}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(repo)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "e2e"]):
        sh(*cmd, cwd=repo, env=env)
    first = sh("dvc", "repro", cwd=repo, env=env)
    second = sh("dvc", "repro", cwd=repo, env=env)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return repo, env, first, second


def runs_by_name(repo):
    runs = mlflow.search_runs(experiment_names=["fmnist-quick"], output_format="list")
    return {r.info.run_name: r for r in runs}


def test_all_stages_ran_and_a_second_repro_does_nothing(pipeline):
    repo, _, first, second = pipeline
    for stage in ("download", "preprocess", "split", "train@mlp", "train@cnn4", "evaluate@mlp", "report"):
        assert f"Running stage '{stage}'" in first
    assert "Running stage" not in second
    raw = repo / "data" / "raw" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


def test_mlflow_runs_hold_recipe_tags_and_per_epoch_metrics(pipeline):
    repo, env, _, _ = pipeline
    runs = runs_by_name(repo)
    assert set(runs) == {"mlp", "cnn4", "report"} and len(runs) == 3  # the second repro added none
    head = sh("git", "rev-parse", "HEAD", cwd=repo, env=env).strip()
    mlp = runs["mlp"]
    assert mlp.info.status == "FINISHED"
    assert mlp.data.params["recipe.optimizer.name"] == "sgd" and mlp.data.params["epochs"] == "2"
    assert mlp.data.tags["fmnist.stage"] == "train@mlp" and mlp.data.tags["git_commit"].startswith(head)
    assert mlp.data.tags["device"] == "cpu" and mlp.data.tags["torch_version"] == torch.__version__
    assert len(mlp.data.tags["data_sha256.train"]) == 64
    history = mlflow.MlflowClient().get_metric_history(mlp.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "lr", "epoch_seconds", "cumulative_seconds", "test_acc"):
        assert key in mlp.data.metrics
    evaluation = json.loads((repo / "metrics" / "eval" / "mlp.json").read_text())
    assert mlp.data.metrics["final_test_acc"] == pytest.approx(evaluation["test_acc"])


def test_logged_model_loads_and_reproduces_the_evaluated_accuracy(pipeline):
    repo, _, _, _ = pipeline
    run = runs_by_name(repo)["mlp"]
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    with np.load(repo / "data" / "prepared" / "test.npz") as test:
        x = torch.from_numpy(test["x"]).float().div(255).unsqueeze(1)
        y = torch.from_numpy(test["y"])
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    evaluation = json.loads((repo / "metrics" / "eval" / "mlp.json").read_text())
    assert accuracy == pytest.approx(evaluation["test_acc"], abs=1e-4)


def test_report_names_its_training_runs(pipeline):
    repo, _, _, _ = pipeline
    runs = runs_by_name(repo)
    report_run = runs["report"]
    ids = {arch: runs[arch].info.run_id for arch in ("mlp", "cnn4")}
    assert report_run.data.tags["fmnist.training_runs"] == f"{ids['mlp']},{ids['cnn4']}"
    assert json.loads((repo / "reports" / "run.json").read_text())["training_runs"] == ids
    text = (repo / "reports" / "report.md").read_text()
    for arch, run_id in ids.items():
        assert f"### {arch}" in text and run_id in text
    assert "diminishing returns" in text and "early stopping" in text
    for png in ("figures/learning_curves.png", "eval/mlp/confusion.png", "eval/cnn4/misclassified.png"):
        assert (repo / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dvc_metrics_show_reads_the_outputs(pipeline):
    repo, env, _, _ = pipeline
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo, env=env))
    text = json.dumps(shown)
    assert "metrics/eval/mlp.json" in text and "best_val_acc" in text and "test_acc" in text
