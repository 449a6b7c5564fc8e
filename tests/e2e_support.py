"""What the end-to-end tests share: the copy of the repository `dvc repro` runs in (the `pipeline` fixture in
conftest.py builds it once per session), commands, the MLflow runs it made, a headless browser, a local port."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import ROOT

DATASET = Path("/usr/share/datasets/fashion-mnist")
TOP_LEVEL_SKIP = {".venv", ".git", "data", "models", "metrics", "plots", "reports", "mlflow.db", "mlartifacts",
                  "mlruns", "dvc.lock", ".pytest_cache", ".whl", "resolved"}


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


def all_runs():
    return mlflow.search_runs(experiment_names=["fmnist-quick"], output_format="list")


def runs_by_name(repo):
    return {r.info.run_name: r for r in all_runs()}


def browser(*args: str, profile: Path) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: run `make setup` (installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    result = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no answer from {url} within {seconds} s")


def build_pipeline(tmp_path_factory):
    """The real DAG on a tiny budget, run twice, in a fresh copy of the repository."""
    if not (DATASET / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"{DATASET} missing: run `make setup` (installs Debian's dataset-fashion-mnist)")
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    shutil.copytree(ROOT, repo, ignore=skip_outputs)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "quick"
    params["train_recipes"] = ["mlp", "cnn4", "sk_logreg"]
    params["download"]["mirrors"] = []  # offline: the local copy only
    params["split"]["val_fraction"] = 0.05
    params["recipes"]["mlp"]["budgets"]["quick"] = {"epochs": 2, "train_subset": 3000}
    params["recipes"]["cnn4"]["budgets"]["quick"] = {"epochs": 1, "train_subset": 500, "eval_subset": 400}
    params["recipes"]["sk_logreg"]["budgets"]["quick"] = {"train_subset": 1000, "model": {"max_iter": 30}}
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
