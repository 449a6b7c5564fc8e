"""The real DAG, `dvc repro`, on a tiny budget in a temporary copy of the repository."""

import csv
import html
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from e2e_support import all_runs, browser, free_port, runs_by_name, sh, wait_for

pytestmark = pytest.mark.e2e


def test_all_stages_ran_and_a_second_repro_does_nothing(pipeline):
    repo, _, first, second = pipeline
    for stage in ("download", "preprocess", "split", "resolve", "train@mlp", "train@cnn4", "evaluate@mlp", "report"):
        assert f"Running stage '{stage}'" in first
    assert "Running stage" not in second
    raw = repo / "data" / "raw" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
    from torchvision.datasets import FashionMNIST

    test_set = FashionMNIST(root=repo / "data" / "raw", train=False, download=False)
    with np.load(repo / "data" / "prepared" / "test.npz") as prepared:
        assert len(test_set) == 10000 and np.array_equal(test_set.data.numpy(), prepared["x"])


def test_mlflow_runs_hold_recipe_tags_and_per_epoch_metrics(pipeline):
    repo, env, _, _ = pipeline
    runs = runs_by_name(repo)
    # the second repro added none
    assert sorted(r.info.run_name for r in all_runs()) == ["cnn4", "mlp", "report", "sk_logreg"]
    assert {r.info.status for r in all_runs()} == {"FINISHED"}
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
    ids = {arch: runs[arch].info.run_id for arch in ("mlp", "cnn4", "sk_logreg")}
    assert report_run.data.tags["fmnist.training_runs"] == f"{ids['mlp']},{ids['cnn4']},{ids['sk_logreg']}"
    behind = mlflow.search_runs(experiment_names=["fmnist-quick"], output_format="list",
                                filter_string=f"tags.`fmnist.report.{report_run.info.run_id}` = 'true'")
    assert sorted(r.info.run_id for r in behind) == sorted(ids.values())
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


def test_tables_rebuilt_from_mlflow_alone_match_the_report_stage(pipeline, tmp_path):
    repo, env, _, _ = pipeline
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    report_run_id = json.loads((repo / "reports" / "run.json").read_text())["run_id"]
    stage_tables = json.loads((repo / "reports" / "tables.json").read_text())
    for selector in ([], ["--run-id", report_run_id]):  # the latest report run, and one by id
        out = sh(sys.executable, "-m", "fmnist.cli", "tables", "--tracking-uri", uri, "--experiment", "fmnist-quick",
                 "--format", "json", *selector, cwd=tmp_path, env=env)  # tmp_path: no DVC outputs there
        assert json.loads(out) == stage_tables
    text = sh(sys.executable, "-m", "fmnist.cli", "tables", "--tracking-uri", uri, "--experiment", "fmnist-quick",
              cwd=tmp_path, env=env)
    assert "## Leaderboard" in text and "### cnn4" in text and "diminishing returns" in text
    training_run = runs_by_name(repo)["mlp"].info.run_id
    for args, message in ((["--run-id", "0" * 32], "no run 000"), (["--run-id", training_run], "is not a report run"),
                          (["--tracking-uri", f"sqlite:///{tmp_path / 'typo.db'}"], "no MLflow database at")):
        bad = subprocess.run([sys.executable, "-m", "fmnist.cli", "tables", "--tracking-uri", uri,
                              "--experiment", "fmnist-quick", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "typo.db").exists()


def test_html_report_renders_in_a_real_browser(pipeline, tmp_path):
    repo, _, _, _ = pipeline
    page = (repo / "reports" / "report.html").read_text()
    assert "src=\"http" not in page and "href=\"http" not in page  # self-contained
    probe = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-check', "
             "JSON.stringify({tables: document.querySelectorAll('table').length, "
             "width: document.documentElement.scrollWidth, "
             "rows: document.querySelectorAll('tbody tr').length, "
             "images: [...document.images].map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])"
             "})));</script>")
    probed = tmp_path / "probe.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    dom = browser("--window-size=1400,900", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri(),
                  profile=tmp_path / "chrome")
    match = re.search(r'data-check="([^"]*)"', dom)
    assert match, dom[:500]
    check = json.loads(html.unescape(match.group(1)))
    assert check["tables"] == 4  # leaderboard + one epoch table per architecture
    assert check["rows"] == 3 + 2 + 1 + 1  # 3 leaderboard rows, mlp 2 epochs, cnn4 1 epoch, sk_logreg 1 fit
    # the leaderboard's picture, 4 overview figures, confusion + mistakes per architecture, the MLP's unit weights
    assert len(check["images"]) == 1 + 4 + 2 * 3 + 1
    assert check["width"] <= 1400  # a laptop's window: no horizontal scroll
    assert all(complete and natural > 0 and shown > 0 for complete, natural, shown in check["images"])
    browser("--window-size=1200,2400", f"--screenshot={tmp_path / 'report.png'}", probed.as_uri(),
            profile=tmp_path / "chrome")
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    report_run = runs_by_name(repo)["report"]
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(report_run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/tables.json"} <= logged


def test_champion_is_served_and_predicts_like_the_evaluate_stage(pipeline):
    repo, env, _, _ = pipeline
    champion = json.loads((repo / "reports" / "champion.json").read_text())
    runs = runs_by_name(repo)
    best = max(("mlp", "cnn4", "sk_logreg"), key=lambda a: runs[a].data.metrics["best_val_acc"])
    assert champion["arch"] == best and champion["uri"] == "models:/fmnist-quick-classifier@champion"
    version = mlflow.MlflowClient().get_model_version_by_alias("fmnist-quick-classifier", "champion")
    assert version.run_id == runs[best].info.run_id

    expected = evaluate_predictions(repo, best)[:200]
    images = evaluated_test_images(repo, best)[:200]
    port = free_port()
    serve_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", champion["uri"],
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], cwd=repo,
                              env=serve_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, seconds=120)
        body = json.dumps({"inputs": (images[:, None].astype("float32") / 255.0).tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            logits = np.asarray(json.loads(response.read())["predictions"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert logits.shape == (200, 10)
    assert logits.argmax(1).tolist() == expected.tolist()


def test_predict_classifies_files_and_reports_unreadable_ones(pipeline, tmp_path):
    repo, env, _, _ = pipeline
    from PIL import Image

    champion = json.loads((repo / "reports" / "champion.json").read_text())
    expected = evaluate_predictions(repo, champion["arch"])
    names = json.loads((repo / "data" / "prepared" / "stats.json").read_text())["classes"]
    images = evaluated_test_images(repo, champion["arch"])[:2]
    paths = [tmp_path / "a.png", tmp_path / "broken.png", tmp_path / "b.png"]
    Image.fromarray(images[0]).save(paths[0])
    paths[1].write_bytes(b"not an image")
    Image.fromarray(images[1]).save(paths[2])
    result = subprocess.run([sys.executable, "-m", "fmnist.cli", "predict", *map(str, paths)], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "broken.png: cannot read it as an image" in result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(paths[0]), str(paths[2])]
    for line, index in zip(lines, (0, 1)):
        assert line.split(": ")[1].startswith(names[expected[index]] + " (")


def evaluated_test_images(repo: Path, arch: str) -> np.ndarray:
    """The test images the evaluate stage scored, in its order (a stratified subset if the budget asks)."""
    from fmnist.data.prepare import load_arrays, stratified_subset

    subset = json.loads((repo / "models" / arch / "run.json").read_text())["test_subset"]
    return stratified_subset(load_arrays(repo / "data" / "prepared" / "test.npz"), subset["size"], subset["seed"]).x


def evaluate_predictions(repo: Path, arch: str) -> np.ndarray:
    """The evaluate stage's predicted class per test image (from its dvc-plots CSV)."""
    names = json.loads((repo / "data" / "prepared" / "stats.json").read_text())["classes"]
    with open(repo / "plots" / "confusion" / f"{arch}.csv", newline="") as fh:
        return np.asarray([names.index(row["predicted"]) for row in csv.DictReader(fh)])


def stale_stages(repo, env):
    return set(re.findall(r"^(\S+):$", sh("dvc", "status", cwd=repo, env=env), re.MULTILINE))


def test_a_change_to_a_base_reruns_exactly_the_stages_whose_resolved_recipe_changed(pipeline):
    repo, env, _, _ = pipeline
    params_file = repo / "params.yaml"
    original = params_file.read_text()

    def change(base, key, value):
        params = yaml.safe_load(params_file.read_text())
        params["recipe_bases"][base][key] = value
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        sh("dvc", "repro", "resolve", cwd=repo, env=env)
        return stale_stages(repo, env)

    try:
        assert change("cyclic_swa", "swa", {"lr": 0.02}) == set()  # no recipe of this DAG extends it
        assert change("keras_adam", "optimizer", {"name": "adam", "lr": 0.002}) == {"train@cnn4", "evaluate@cnn4"}
    finally:
        params_file.write_text(original)
        sh("dvc", "repro", "resolve", cwd=repo, env=env)
    assert stale_stages(repo, env) == set()
