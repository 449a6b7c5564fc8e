"""`fmnist ui` on the end-to-end store, checked in a real browser: MLflow's own page, opened through the printed
link on the training runs sorted by test accuracy, and nothing else."""

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections import defaultdict
from html.parser import HTMLParser

import pytest

from e2e_support import all_runs, browser, free_port, wait_for

pytestmark = pytest.mark.e2e

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
RUN_NAME, TEST_ACC = "attributes.`Run Name`", "metrics.`final_test_acc`"


class GridCells(HTMLParser):
    """The text of each cell of MLflow's runs grid (ag-grid), by run id (a row's row-id) and column id, and
    each run's place in the grid (its row-index: the grid positions rows, so the DOM's order says nothing)."""

    def __init__(self):
        super().__init__()
        self.cells: dict[str, dict[str, str]] = defaultdict(lambda: defaultdict(str))
        self.places: dict[str, int] = {}
        self.stack: list[tuple[str | None, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        a = dict(attrs)
        row, cell = self.stack[-1] if self.stack else (None, None)
        if a.get("role") == "row" and a.get("row-id"):
            row = a["row-id"]
            self.places[row] = int(a["row-index"])
        if a.get("role") == "gridcell" and a.get("col-id"):
            cell = a["col-id"]
        self.stack.append((row, cell))

    def handle_endtag(self, tag):
        if tag not in VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        row, cell = self.stack[-1] if self.stack else (None, None)
        if row and cell:
            self.cells[row][cell] += data


def read_grid(dom: str) -> GridCells:
    grid = GridCells()
    grid.feed(dom)
    return grid


@pytest.fixture
def ui_links(pipeline):
    """`fmnist ui` started as a user would, in the project (params.yaml's profile: quick), on a free port."""
    repo, env, _, _ = pipeline
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "fmnist.cli", "ui", "--port", str(port)], cwd=repo, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", ui, seconds=180)
        printed = ""
        while "Ctrl-C" not in printed and (line := ui.stdout.readline()):  # its last line, or its end
            printed += line
        links = dict(re.findall(r"^\s+(.+?): (http://\S+)$", printed, re.M))
        yield printed, links
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=120)  # it stops `mlflow ui`, which can take a while on a busy machine
    with pytest.raises(OSError):  # and `mlflow ui` went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)


def test_the_printed_link_opens_the_training_runs_sorted_by_test_accuracy(pipeline, ui_links, tmp_path):
    printed, links = ui_links
    assert "experiment 'fmnist-quick'" in printed, printed
    table = links["training runs by test accuracy"]
    assert table.startswith("http://127.0.0.1:") and "workflowType=machine_learning" in table
    dom = browser("--virtual-time-budget=20000", "--window-size=1900,1000", "--dump-dom", table,
                  profile=tmp_path / "chrome")
    grid = read_grid(dom)
    cells = grid.cells
    runs = {r.info.run_id: r for r in all_runs()}
    training = [r for r in runs.values() if r.data.tags["fmnist.stage"].startswith("train@")]
    assert sorted(r.info.run_name for r in training) == ["cnn4", "mlp", "sk_logreg"]
    for run in training:
        # the cell's text: the run's colour (the colour picker's value), then its name
        assert re.fullmatch(rf"(#[0-9a-f]{{6}})?{re.escape(run.info.run_name)}", cells[run.info.run_id][RUN_NAME])
        assert cells[run.info.run_id][TEST_ACC] == repr(run.data.metrics["final_test_acc"])
    assert set(cells) == {r.info.run_id for r in training}  # no report run, nothing else
    shown = sorted(cells, key=grid.places.get)
    accuracies = [runs[run_id].data.metrics["final_test_acc"] for run_id in shown]
    assert accuracies == sorted(accuracies, reverse=True)
    assert "Model training" in dom and "Overview" not in dom  # MLflow's model-training pages, not GenAI's
    repo = pipeline[0]  # the report names the same views, where `make ui` serves them
    report = (repo / "reports" / "report.md").read_text()
    assert all(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:5000", link) in report for link in links.values())
    browser("--virtual-time-budget=20000", "--window-size=1900,1000", f"--screenshot={tmp_path / 'ui.png'}",
            links["validation accuracy against epoch and training time"], profile=tmp_path / "chrome")
    assert (tmp_path / "ui.png").read_bytes()[:4] == b"\x89PNG"
