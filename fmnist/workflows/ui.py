"""`fmnist ui`: MLflow's UI opened on the comparison a benchmark user wants, with nothing patched in MLflow.

MLflow 3.17's experiment page takes its state from three places, and this module uses the two it can set:

- the query string: `viewStateShareKey` (a saved view, below), `compareRunsMode` (TABLE or CHART) and
  `workflowType=machine_learning`. The last one matters: 3.17 picks an experiment's tabs from a global
  "workflow type" (localStorage `mlflow.workflowType`, GenAI unless the user switched it, or this query
  parameter) and no longer from the experiment tag `mlflow.experimentKind`, so without it a fresh browser
  lands on the GenAI overview (Traces 0) however the experiment is tagged;
- a saved view: the experiment tag `mlflow.sharedViewState.<id>` holding the search filter, the sort, the
  columns, the charts and the chart-visibility mode, which the page applies when the query string names it
  (the UI's own "Save & share view" writes the same tag; it is listed among the experiment's views);
- the browser's localStorage (the rest: pinned, hidden or expanded runs), which a link cannot carry.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from mlflow import MlflowClient

from fmnist.core.errors import FmnistError, StoreError, Terminated
from fmnist.tracking import STAGE_TAG

VIEW_ID = "fmnist-training-runs"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
VIEW_NAME = "fmnist: training runs by test accuracy"
# The training runs the report reads: not the report runs (`report`), the `mlflow run` parents (no stage tag),
# sweep trials, speed runs, nor the offline parts' half-budget probes.
TRAINING_RUNS = f"tags.`{STAGE_TAG}` LIKE 'train@%' AND tags.`fmnist.probe` IS NULL"
SORT_METRIC = "final_test_acc"  # the evaluate stage's accuracy on every test image, as in the report
# seeds_*: the spread over the stage's seeds, on the stage's own run (core/seeds.py); later seeds' runs leave it empty
HEADLINE_METRICS = ("final_test_acc", "seeds_test_acc_mean", "seeds_test_acc_std", "seeds_n", "best_val_acc",
                    "epochs_run", "train_seconds", "num_params")
HEADLINE_PARAMS = ("seed", "precision_used")
CHART_SECTION = "fmnist: validation accuracy"
MODEL_METRICS, SYSTEM_METRICS = "Model metrics", "System metrics"  # the sections MLflow fills by itself


@dataclass(frozen=True)
class Links:
    runs: str  # the table: training runs sorted by test accuracy, headline columns
    charts: str  # validation accuracy against epoch and against training time, every run shown

    def describe(self, experiment: str) -> str:
        return (f"MLflow, experiment '{experiment}' (saved view '{VIEW_NAME}'):\n"
                f"  training runs by test accuracy: {self.runs}\n"
                f"  validation accuracy against epoch and training time: {self.charts}")


def column(kind: str, key: str) -> str:
    """A column or sort key as the experiment page names it (its makeCanonicalSortKey)."""
    return f"{kind}.`{key}`"


def line_chart(uuid: str, section: str, x_axis: str, x_metric: str = "") -> dict:
    """A line chart of val_acc, in the serialized form of the page's RunsChartsLineCardConfig."""
    return {"uuid": uuid, "type": "LINE", "metricSectionId": section, "deleted": False, "isGenerated": False,
            "metricKey": "val_acc", "selectedMetricKeys": ["val_acc"],
            "xAxisKey": x_axis, "selectedXAxisMetricKey": x_metric, "useGlobalXaxisKey": False,
            "useGlobalLineSmoothing": False, "lineSmoothness": 0, "xAxisScaleType": "linear",
            "scaleType": "linear", "runsCountToCompare": 1000, "range": {}}


def view_state() -> dict:
    """The saved view: search facets and UI state, as the page serializes them."""
    sections = [{"uuid": "fmnist-section", "name": CHART_SECTION, "display": True, "isReordered": False},
                # MLflow adds a chart for every other metric; they wait, folded, below ours.
                {"uuid": "fmnist-model-metrics", "name": MODEL_METRICS, "display": False, "isReordered": False},
                {"uuid": "fmnist-system-metrics", "name": SYSTEM_METRICS, "display": False, "isReordered": False}]
    charts = [line_chart("fmnist-val-acc-epoch", "fmnist-section", "step"),
              line_chart("fmnist-val-acc-time", "fmnist-section", "metric", "cumulative_seconds")]
    columns = [*(column("metrics", m) for m in HEADLINE_METRICS), *(column("params", p) for p in HEADLINE_PARAMS)]
    return {
        "searchFilter": TRAINING_RUNS, "orderByKey": column("metrics", SORT_METRIC), "orderByAsc": False,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
        "selectedColumns": columns,
        # The grid's own column ids: without an order it sorts each group's columns by name.
        "columnOrder": [column("attributes", "Run Name"), "runDateAndNestInfo", "duration", *columns],
        "runsHiddenMode": "SHOW_ALL",  # the charts' default is the first ten runs: most architectures hidden
        "compareRunCharts": charts, "compareRunSections": sections, "isAccordionReordered": True,
        "hideEmptyCharts": True, "groupBy": None, "groupsExpanded": {}, "viewMaximized": False,
        "runListHidden": False, "useGroupedValuesInCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def save_view(client: MlflowClient, experiment_id: str) -> None:
    """Write (or refresh) the saved view on the experiment, in the envelope MLflow's saved views use."""
    envelope = {"name": VIEW_NAME, "createdAt": int(time.time() * 1000), "state": json.dumps(view_state())}
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(envelope))


def view_links(base_url: str, experiment_id: str) -> Links:
    def link(mode: str) -> str:
        query = urllib.parse.urlencode({"viewStateShareKey": VIEW_ID, "compareRunsMode": mode,
                                        "workflowType": "machine_learning"})
        return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
    return Links(runs=link("TABLE"), charts=link("CHART"))


def report_sentence(client: MlflowClient, experiment: str, uri: str) -> str:
    """The report's pointer to the same views. It saves the view too, so that the links also work in an
    `mlflow ui` started by hand on port 5000."""
    experiment_id = find_experiment(client, experiment, uri)
    save_view(client, experiment_id)
    links = view_links(uri if is_server(uri) else "http://127.0.0.1:5000", experiment_id)
    where = "on the tracking server" if is_server(uri) else "after `make ui`"
    return (f"In MLflow ({where}): the training runs sorted by test accuracy, {links.runs} ; their validation "
            f"accuracy against epoch and training time, {links.charts}")


def find_experiment(client: MlflowClient, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise StoreError(f"no experiment '{name}' in {uri} (it holds: {', '.join(names) or 'none'}); run the "
                         "pipeline first (e.g. `make quick`) or pass --experiment NAME")
    return experiment.experiment_id


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        # As the server binds: a port left in TIME_WAIT by a UI just stopped is free, a listening one is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise FmnistError(f"port {port} on {host} is taken (another `mlflow ui`?); stop it or pass "
                              "--port N") from None


def start_ui(uri: str, host: str, port: int) -> subprocess.Popen:
    """`mlflow ui` on the store, in a process group of its own: stopping this command stops it and its server."""
    # Nothing phones home; and no GenAI job runner (online scoring, trace archival), which training runs never use.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true"}
    return subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
                             "--port", str(port), "--workers", "1"], env=env, start_new_session=True,
                            stdout=2)  # its log on stderr: stdout holds the links alone


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FmnistError(f"`mlflow ui` exited with {process.returncode} before answering {url}; its "
                              "message is above")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise FmnistError(f"`mlflow ui` did not answer {url} within {seconds:.0f} s")


def open_ui(experiment: str, uri: str, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Save the view on the experiment, then print its links: on the tracking server that `uri` names, or on
    an `mlflow ui` started here on the store (it runs until Ctrl-C)."""
    client = MlflowClient(uri)
    experiment_id = find_experiment(client, experiment, uri)
    if is_server(uri):
        save_view(client, experiment_id)
        print(view_links(uri, experiment_id).describe(experiment), flush=True)
        return 0
    check_port_free(host, port)  # before anything is written
    save_view(client, experiment_id)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)  # a plain `kill` stops the UI too
    process = start_ui(uri, host, port)
    try:
        base = f"http://{host}:{port}"
        wait_until_up(base, process)
        print(view_links(base, experiment_id).describe(experiment) + "\n(Ctrl-C stops the UI)", flush=True)
        return process.wait()
    except (KeyboardInterrupt, Terminated):  # the way to end it: not a failure
        print("stopping mlflow ui", file=sys.stderr)
        return 0
    finally:
        stop(process)
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame):  # noqa: ARG001
    raise Terminated(f"received signal {signum}")


def stop(process: subprocess.Popen, grace_s: float = 60) -> None:
    """SIGTERM to `mlflow ui`'s group (it forwards it to its server, which may take its time on a busy
    machine), SIGKILL after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
