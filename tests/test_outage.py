"""A tracking server that goes away mid-training: the training goes on, what it logs waits in a journal on
disk and reaches the server once, in order, when it is back; past the outage limit the training stops with
one line and the next start resumes it. The server here is MLflow's own app on a SQLite store, served in this
process so that an outage is a stop and a start of a socket, not of a process (seconds, not a minute)."""

import logging
import os
import threading

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.server import handlers
from test_reliability import params

from fmnist.ci import server as srv
from fmnist.core.errors import ConfigError
from fmnist.core.runs import EpochRecord, read_pointer
from fmnist.tracking import journal as journal_module
from fmnist.tracking.journal import Journal, JournaledRunLog, OutagePolicy, OutageTooLong, journal_path, send
from fmnist.tracking.stale import PID_TAG
from fmnist.training import resume as resume_module
from fmnist.workflows.train import TrainPaths, train_architecture

from test_workflows import project  # noqa: F401 (fixture)


class LoopbackServer:
    """MLflow's tracking app (REST API, /health, proxied artifacts) on a fixed port, stopped and started at will."""

    def __init__(self, folder):
        from werkzeug.serving import make_server  # noqa: F401 (fails here, not in a thread, if missing)

        self.port = srv.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self.server = None

    def start(self):
        from mlflow.server import app
        from werkzeug.serving import WSGIRequestHandler, make_server

        # The app's first request would point this process's MLflow client at the server's own store: open the
        # stores now, then point the client back.
        uri = mlflow.get_tracking_uri()
        handlers._get_tracking_store()
        handlers._get_model_registry_store()
        mlflow.set_tracking_uri(uri)

        class OneRequestPerConnection(WSGIRequestHandler):
            protocol_version = "HTTP/1.0"  # no kept-alive connection outlives a stop

        self.server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=OneRequestPerConnection)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("_MLFLOW_SERVER_FILE_STORE", f"sqlite:///{folder / 'mlflow.db'}")
        mp.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", "mlflow-artifacts:/")
        mp.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")
        mp.setenv("_MLFLOW_SERVER_ARTIFACT_DESTINATION", str(folder / "artifacts"))
        loopback = LoopbackServer(folder)
        loopback.start()
        yield loopback
        loopback.stop()
        handlers._tracking_store = handlers._model_registry_store = None


@pytest.fixture
def on_server(project, server, monkeypatch):  # noqa: F811
    """The tiny project logging to the loopback server, probed every 0.1 s; the code hash fixed, since others may
    edit the package while a test runs and a changed hash (rightly) starts afresh instead of resuming."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("FMNIST_OUTAGE_PROBE_S", "0.1")
    monkeypatch.setenv("FMNIST_SYSTEM_METRICS", "off")
    monkeypatch.setattr(resume_module, "code_hash", lambda: "fixed")
    return project


REAL_EPOCH = JournaledRunLog.epoch


def outage_at(monkeypatch, server, stop_at, start_at=None):
    """The server goes away just before epoch `stop_at` is logged, and comes back before `start_at` is."""
    real_epoch = REAL_EPOCH

    def epoch(self, record):
        if record.epoch == stop_at:
            server.stop()
        if record.epoch == start_at:
            server.start()
        real_epoch(self, record)

    monkeypatch.setattr(JournaledRunLog, "epoch", epoch)


def logged_once(client, run_id, epochs):
    for key in ("val_acc", "train_loss", "lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(1, epochs + 1)), key


def test_a_training_goes_on_through_an_outage_and_logs_every_epoch_once(on_server, server, monkeypatch, caplog):
    outage_at(monkeypatch, server, stop_at=2, start_at=4)
    with caplog.at_level(logging.INFO):
        train_architecture(params(epochs=5).run_of("mlp"), TrainPaths.for_arch("mlp"))
    client = MlflowClient(server.uri)
    run = client.get_run(read_pointer(on_server / "models/mlp").run_id)
    assert run.info.status == "FINISHED" and run.data.params["num_params"]  # a param logged by the trainer
    logged_once(client, run.info.run_id, 5)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "probes")] == ["probes/unit_weights.npz"]
    said = [r.getMessage() for r in caplog.records if r.name != "werkzeug"]
    assert sum("unreachable" in line and "training goes on" in line for line in said) == 1, said
    assert sum("is back after" in line for line in said) == 1, said
    assert not [r.getMessage() for r in caplog.records if r.name.startswith(("urllib3", "mlflow"))]  # no flood
    assert not journal_path(resume_module.state_path(on_server, on_server / "models/mlp")).exists()


def test_past_the_outage_limit_the_training_stops_and_the_next_start_resumes(on_server, server, monkeypatch):
    monkeypatch.setenv("FMNIST_OUTAGE_LIMIT_S", "0.5")
    outage_at(monkeypatch, server, stop_at=2)
    with pytest.raises(OutageTooLong, match=r"has not answered for .* past the limit \(FMNIST_OUTAGE_LIMIT_S=0.5 s\)"):
        train_architecture(params(epochs=5).run_of("mlp"), TrainPaths.for_arch("mlp"))
    state = resume_module.state_path(on_server, on_server / "models/mlp")
    journal = Journal(journal_path(state))
    assert state.is_file() and journal.pending()  # resumable, and what the server missed is on disk
    server.start()
    monkeypatch.setattr(JournaledRunLog, "epoch", REAL_EPOCH)  # no more outages
    client = MlflowClient(server.uri)
    stopped = journal.pending()[0][1]["run_id"]
    assert client.get_run(stopped).info.status == "RUNNING"  # the server was away: nothing could close it
    client.set_tag(stopped, PID_TAG, "999999999")  # as the process's end leaves it (here the process lives on)
    train_architecture(params(epochs=5).run_of("mlp"), TrainPaths.for_arch("mlp"))
    run = client.get_run(read_pointer(on_server / "models/mlp").run_id)
    assert run.info.run_id == stopped and run.info.status == "FINISHED"
    logged_once(client, stopped, 5)
    assert not state.exists() and not journal.folder.exists()


def test_an_entry_sent_twice_is_stored_once(server):
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("twice")).info.run_id
    entry = {"run_id": run_id, "kind": "metrics", "step": 3, "timestamp": 1_700_000_000_000,
             "metrics": {"val_acc": 0.5, "train_loss": float("nan")}}
    for _ in range(2):  # e.g. the server took it but its answer was lost
        send(client, entry)
        send(client, {"run_id": run_id, "kind": "params", "params": {"num_params": "12"}})
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")] == [(3, 0.5)]
    assert len(client.get_metric_history(run_id, "train_loss")) == 1


def test_the_journal_keeps_order_acknowledgements_and_survives_a_torn_line(tmp_path):
    journal = Journal(tmp_path / "j")
    for step in (1, 2, 3):
        journal.append({"kind": "metrics", "step": step})
    offset, _ = journal.pending()[0]
    journal.ack(offset)
    with open(tmp_path / "j" / "entries.jsonl", "ab") as fh:
        fh.write(b'{"kind": "metr')  # the machine died mid-write
    journal = Journal(tmp_path / "j")
    journal.append({"kind": "metrics", "step": 4})
    assert [entry["step"] for _, entry in journal.pending()] == [2, 3, 4]


def test_a_failed_send_costs_seconds_and_counts_as_an_outage(tmp_path, caplog):
    import time

    nowhere = f"http://127.0.0.1:{srv.free_port()}"  # nothing listens there
    log = JournaledRunLog("0" * 32, Journal(tmp_path / "j"), OutagePolicy(limit_s=600, probe_s=60), nowhere)
    budget_before = {name: os.environ.get(name) for name in journal_module.SHORT_BUDGET}
    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        log.epoch(EpochRecord(epoch=1, train_acc=0.5, val_acc=0.5, epoch_seconds=1.0, cumulative_seconds=1.0))
        log.epoch(EpochRecord(epoch=2, train_acc=0.6, val_acc=0.6, epoch_seconds=1.0, cumulative_seconds=2.0))
    assert time.monotonic() - began < 15  # MLflow's own budget: 7 retries over about 4 minutes
    assert log.down_since is not None and len(log.journal.pending()) == 2
    assert [r.name for r in caplog.records] == ["fmnist"], [r.getMessage() for r in caplog.records]
    assert {name: os.environ.get(name) for name in journal_module.SHORT_BUDGET} == budget_before  # for its calls only
    journal_module._QUIET.holds = 0  # the outage never ended in this test: let other tests' warnings through


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_a_bad_outage_limit_is_one_line(value, monkeypatch):
    monkeypatch.setenv("FMNIST_OUTAGE_LIMIT_S", value)
    with pytest.raises(ConfigError, match=f"FMNIST_OUTAGE_LIMIT_S='{value}': expected a positive number of seconds"):
        OutagePolicy.from_env()


# -- fmnist server start: whichever of its two processes died ----------------------------------------------

def test_server_start_restarts_the_dead_process_and_refuses_when_both_are_up(tmp_path, monkeypatch):
    recorded = srv.Server(str(tmp_path), "127.0.0.1", 5999, 5998, 4242)
    (tmp_path / srv.STATE).write_text(__import__("json").dumps(__import__("dataclasses").asdict(recorded)))
    started = []
    monkeypatch.setattr(srv, "start_postgres", lambda pgdata, port: started.append(("postgres", port)))
    monkeypatch.setattr(srv, "_start_mlflow", lambda server, workers: started.append(("mlflow", server.port)) or server)
    monkeypatch.setattr(srv, "_is_mlflow_group", lambda pgid: False)
    for pg_up, mlflow_up, expected in ((False, True, [("postgres", 5998)]), (True, False, [("mlflow", 5999)]),
                                       (False, False, [("postgres", 5998), ("mlflow", 5999)])):
        started.clear()
        monkeypatch.setattr(srv, "postgres_running", lambda pgdata, up=pg_up: up)
        monkeypatch.setattr(srv, "mlflow_running", lambda server, up=mlflow_up: up)
        assert srv.start(tmp_path, port=1, pg_port=2) == recorded  # the recorded ports, not the arguments
        assert started == expected
    monkeypatch.setattr(srv, "postgres_running", lambda pgdata: True)
    monkeypatch.setattr(srv, "mlflow_running", lambda server: True)
    with pytest.raises(ConfigError, match="is already running .* stop it first"):
        srv.start(tmp_path)


def test_a_run_status_is_set_quickly_when_the_server_is_gone(monkeypatch):
    """On the way out after an error, a server that is down costs seconds (not MLflow's minutes of retries)."""
    import time

    import mlflow

    from fmnist import tracking

    port = srv.free_port()
    monkeypatch.setattr(mlflow, "active_run", lambda: object())
    monkeypatch.setattr(mlflow, "end_run", lambda status: MlflowClient(f"http://127.0.0.1:{port}").set_terminated(
        "0" * 32, status))
    began = time.monotonic()
    tracking._end_active(RunStatus.FAILED)
    assert time.monotonic() - began < 15
