"""The walkthrough notebook (notebooks/walkthrough.py, jupytext's percent format) executed cell by cell in a
kernel against the runs the end-to-end pipeline left in its MLflow store: any failing cell fails the test."""

import jupytext
import pytest
from nbclient import NotebookClient

from conftest import ROOT

pytestmark = pytest.mark.e2e

NOTEBOOK = ROOT / "notebooks" / "walkthrough.py"


def outputs_of(notebook, kind: str) -> list[str]:
    """Every output of one kind: 'stream' (printed text), or a MIME type of displayed data."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "stream" and output["output_type"] == "stream":
                found.append(output["text"])
            elif kind in output.get("data", {}):
                found.append(output["data"][kind])
    return found


def test_the_walkthrough_runs_on_the_pipelines_store(pipeline):
    repo, env, _, _ = pipeline
    notebook = jupytext.read(NOTEBOOK)
    store = f"sqlite:///{repo / 'mlflow.db'}"
    kernel_env = {**{k: v for k, v in env.items() if k != "FMNIST_ROOT"}, "MLFLOW_TRACKING_URI": store,
                  "FMNIST_EXPERIMENT": "fmnist-quick", "FMNIST_TEST_IMAGES": "500"}
    # Run from the copy's notebooks/ folder, as `make notebook` runs it: the project root is found above it.
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(repo / "notebooks")}}).execute(env=kernel_env)

    printed = "".join(outputs_of(notebook, "stream"))
    assert f"store {store}" in printed and "experiment 'fmnist-quick'" in printed
    assert "3 recipes (mlp, cnn4, sk_logreg)" in printed
    assert f"on 500 test images of {repo / 'data' / 'prepared' / 'test.npz'} (the evaluate stage logged 0." in printed
    assert "true: " in printed and "predicted: " in printed
    leaderboard, epoch_table = outputs_of(notebook, "text/markdown")
    assert all(f"| {arch} |" in leaderboard for arch in ("mlp", "cnn4", "sk_logreg"))
    assert "**diminishing returns**" in epoch_table and "**early stopping**" in epoch_table
    # The learning curves against epoch and time, the confusion matrix, the mistakes, the one image.
    assert len(outputs_of(notebook, "image/png")) == 5
