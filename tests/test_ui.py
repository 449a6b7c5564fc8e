"""`fmnist ui`'s saved view and links, on a small SQLite store (the browser check is tests/test_e2e_ui.py)."""

import json
import socket
import urllib.parse

import pytest
from mlflow import MlflowClient

from fmnist.core.errors import FmnistError, StoreError
from fmnist.workflows import ui


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An experiment holding what a profile's experiment holds: training runs (one of them a probe), a report
    run, an `mlflow run` parent without a stage tag, a speed run. One store for the module: a new one costs
    seconds."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("fmnist-quick")
    names = {}
    for name, tags in (("mlp", {"fmnist.stage": "train@mlp"}), ("cnn4", {"fmnist.stage": "train@cnn4"}),
                       ("cnn4 probe", {"fmnist.stage": "train@cnn4", "fmnist.probe": "half_budget"}),
                       ("report", {"fmnist.stage": "report"}), ("mlflow run parent", {}),
                       ("speedrun cpu94", {"fmnist.stage": "speedrun@cpu94"})):
        names[client.create_run(experiment_id, tags=tags, run_name=name).info.run_id] = name
    return uri, client, experiment_id, names


def saved_state(client, experiment_id) -> dict:
    envelope = json.loads(client.get_experiment(experiment_id).tags[ui.VIEW_TAG])
    assert envelope["name"] == ui.VIEW_NAME and isinstance(envelope["createdAt"], int)
    return json.loads(envelope["state"])


def test_the_saved_view_selects_the_training_runs_and_shows_every_one(store):
    uri, client, experiment_id, names = store
    ui.save_view(client, experiment_id)
    state = saved_state(client, experiment_id)
    found = client.search_runs([experiment_id], state["searchFilter"])  # the filter MLflow's page sends
    assert sorted(names[r.info.run_id] for r in found) == ["cnn4", "mlp"]
    assert state["orderByKey"] == "metrics.`final_test_acc`" and state["orderByAsc"] is False
    assert state["selectedColumns"][:4] == ["metrics.`final_test_acc`", "metrics.`seeds_test_acc_mean`",
                                            "metrics.`seeds_test_acc_std`", "metrics.`seeds_n`"]
    assert "params.`precision_used`" in state["selectedColumns"]
    assert state["runsHiddenMode"] == "SHOW_ALL"
    x_axes = {(c["metricKey"], c["xAxisKey"], c["selectedXAxisMetricKey"]) for c in state["compareRunCharts"]}
    assert x_axes == {("val_acc", "step", ""), ("val_acc", "metric", "cumulative_seconds")}
    ui.save_view(client, experiment_id)  # again: the same one tag, refreshed
    assert [k for k in client.get_experiment(experiment_id).tags if k.startswith("mlflow.sharedViewState.")] == \
        [ui.VIEW_TAG]


def test_links_open_the_runs_tab_of_the_model_training_pages_on_the_view():
    links = ui.view_links("http://127.0.0.1:5000/", "7")
    for link, mode in ((links.runs, "TABLE"), (links.charts, "CHART")):
        page, _, query = link.partition("?")
        assert page == "http://127.0.0.1:5000/#/experiments/7/runs"
        # No search-facet parameter: MLflow ignores a saved view when the query string carries one.
        assert urllib.parse.parse_qs(query) == {"viewStateShareKey": [ui.VIEW_ID], "compareRunsMode": [mode],
                                                "workflowType": ["machine_learning"]}


def test_an_unknown_experiment_is_named_with_those_there_are(store):
    uri, client, _, _ = store
    with pytest.raises(StoreError, match=r"no experiment 'fmnist-cpu' in .* \(it holds: .*fmnist-quick.*\); run "):
        ui.open_ui("fmnist-cpu", uri, port=1)


def test_a_taken_port_is_refused_before_anything_is_written(store):
    uri, client, _, _ = store
    experiment_id = client.create_experiment("fmnist-port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(FmnistError, match=f"port {port} on 127.0.0.1 is taken.*--port N"):
            ui.open_ui("fmnist-port", uri, port=port)
    assert ui.VIEW_TAG not in client.get_experiment(experiment_id).tags


def test_the_report_names_the_same_views_and_saves_them(store):
    uri, client, _, _ = store
    experiment_id = client.create_experiment("fmnist-report")
    sentence = ui.report_sentence(client, "fmnist-report", uri)
    links = ui.view_links("http://127.0.0.1:5000", experiment_id)
    assert "after `make ui`" in sentence and links.runs in sentence and links.charts in sentence
    assert saved_state(client, experiment_id)["runsHiddenMode"] == "SHOW_ALL"
