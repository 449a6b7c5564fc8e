"""Long runs survive interruption: a resumed training continues its MLflow run and ends as if never
stopped; runs whose process is gone are closed; a new SQLite store takes concurrent first users."""

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from fmnist.core.runs import read_history, read_pointer
from fmnist.tracking.stale import HOST_TAG, PID_TAG
from fmnist.training import resume as resume_module
from fmnist.workflows.train import TrainPaths, train_architecture

from conftest import ROOT
from test_workflows import project, tiny_params  # noqa: F401 (fixture)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even the run's FAILED status)."""


def params(epochs=4):
    p = tiny_params()
    recipes = dict(p.recipes)
    recipes["mlp"] = recipes["mlp"].model_copy(update={"epochs": epochs})
    return p.model_copy(update={"recipes": recipes})


def test_an_interrupted_training_resumes_in_the_same_run_and_ends_identical(project, monkeypatch):  # noqa: F811
    straight = train_architecture(params().run_of("mlp"), TrainPaths.for_arch("mlp", model_dir=project / "straight"),
                                  resume=False)
    straight_history = read_history(project / "metrics/history/mlp.csv")
    real_save = resume_module.save_state

    def save_then_die(path, key, run_id, fitter, extra):
        real_save(path, key, run_id, fitter, extra)
        if fitter["next_epoch"] == 3:
            raise Killed

    monkeypatch.setattr("fmnist.workflows.train.save_state", save_then_die)
    with pytest.raises(Killed):
        train_architecture(params().run_of("mlp"), TrainPaths.for_arch("mlp"))
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    (interrupted,) = [r for r in client.search_runs([client.get_experiment_by_name("fmnist-quick").experiment_id])
                      if r.info.status != "FINISHED"]
    # As SIGKILL leaves it: RUNNING, its process gone (in-process, the exception closed it as FAILED).
    client.update_run(interrupted.info.run_id, status="RUNNING")
    client.set_tag(interrupted.info.run_id, PID_TAG, "999999999")
    monkeypatch.setattr("fmnist.workflows.train.save_state", real_save)
    resumed = train_architecture(params().run_of("mlp"), TrainPaths.for_arch("mlp"))
    run = client.get_run(read_pointer(project / "models/mlp").run_id)
    assert run.info.run_id == interrupted.info.run_id and run.info.status == "FINISHED"
    strip = lambda h: [{k: v for k, v in r.row().items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(read_history(project / "metrics/history/mlp.csv")) == strip(straight_history)
    assert resumed.best_val_acc == straight.best_val_acc
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert steps == [1, 2, 3, 4]  # every epoch logged once
    assert not resume_module.state_path(project, project / "models/mlp").exists()  # removed once the stage succeeded


def test_a_changed_recipe_starts_afresh_and_says_so(project, monkeypatch, caplog):  # noqa: F811
    def die(path, key, run_id, fitter, extra):
        resume_module.save_state(path, key, run_id, fitter, extra)
        raise Killed
    monkeypatch.setattr("fmnist.workflows.train.save_state", die)
    with pytest.raises(Killed):
        train_architecture(params().run_of("mlp"), TrainPaths.for_arch("mlp"))
    monkeypatch.setattr("fmnist.workflows.train.save_state", resume_module.save_state)
    with caplog.at_level("INFO", logger="fmnist"):
        train_architecture(params(epochs=2).run_of("mlp"), TrainPaths.for_arch("mlp"))
    assert "the recipe changed since the saved state" in caplog.text
    assert [r.epoch for r in read_history(project / "metrics/history/mlp.csv")] == [1, 2]


def test_stale_runs_are_listed_and_closed(project):  # noqa: F811
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment("stale-test")
    stale = client.create_run(experiment, tags={HOST_TAG: os.uname().nodename, PID_TAG: "999999999"})
    alive = client.create_run(experiment, tags={HOST_TAG: os.uname().nodename, PID_TAG: str(os.getppid())})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    listed = subprocess.run([sys.executable, "-m", "fmnist.cli", "runs", "--stale"], cwd=project, env=env,
                            capture_output=True, text=True)
    assert stale.info.run_id in listed.stdout and alive.info.run_id not in listed.stdout
    closed = subprocess.run([sys.executable, "-m", "fmnist.cli", "runs", "--close"], cwd=project, env=env,
                            capture_output=True, text=True)
    assert closed.returncode == 0, closed.stderr
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert "ended without closing the run" in client.get_run(stale.info.run_id).data.tags["fmnist.end_reason"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


def test_concurrent_first_use_of_a_new_sqlite_store(tmp_path):
    # as the train stage does: first search the store (stale runs), then create the experiment
    code = ("from fmnist import tracking; import mlflow; from mlflow import MlflowClient; tracking.configure(); "
            "MlflowClient().search_runs(['0']); eid = tracking.ensure_experiment('first-use'); "
            "r = mlflow.start_run(experiment_id=eid); mlflow.log_metric('m', 1.0); mlflow.end_run()")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'new.db'}"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("first-use").experiment_id])
    assert len(runs) == 4 and all(r.data.metrics["m"] == 1.0 for r in runs)


# Run a stage with every network connection refused, and note each one attempted (local sockets allowed).
NO_NETWORK = """
import json, os, runpy, socket, sys
attempts, record = [], sys.argv[1]
def refuse(what, target):
    attempts.append(f"{what} {target!r}")
    with open(record, "w") as fh:
        json.dump(attempts, fh)
    raise OSError(f"network refused by the test: {what} {target!r}")
def guard(original):
    def connect(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse("connect", address)
        return original(self, address, *args)
    return connect
socket.socket.connect = guard(socket.socket.connect)
socket.socket.connect_ex = guard(socket.socket.connect_ex)
real_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        refuse("getaddrinfo", host)
    return real_getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python stages/train.py` would
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:  # background threads (a telemetry client's) get 1 s to try to connect before the process ends
    import threading, time
    deadline = time.monotonic() + 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
"""


# What would make MLflow keep quiet without us: the opt-outs the Makefile exports, and the variables by which
# MLflow's telemetry takes a process for a test or a CI job (mlflow/telemetry/utils.py).
QUIET_ANYWAY = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "CIRCLECI",
                "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD", "BUILDKITE", "TEAMCITY_VERSION")


def test_nothing_phones_home(project):  # noqa: F811
    """A training stage and its MLflow run, with the network refused: not one connection is attempted, in a
    process that looks to MLflow like a user's (MLflow's telemetry is off because fmnist turns it off)."""
    import json

    import yaml

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data.update(profile="quick", train_recipes=["mlp"])
    data["train"]["device"] = "cpu"
    data["recipes"]["mlp"]["budgets"]["quick"] = {"epochs": 1, "train_subset": 300}
    (project / "params.yaml").write_text(yaml.safe_dump(data))
    attempts = project / "attempts.json"
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ANYWAY}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK, str(attempts), str(ROOT / "stages/train.py"), "--arch",
                           "mlp"], cwd=project, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_pointer(project / "models/mlp").run_id  # it did train and log
    assert not attempts.exists(), json.loads(attempts.read_text())


def test_sigterm_ends_a_training_with_one_line_and_the_run_killed(project):  # noqa: F811
    """SIGTERM mid-training: one line, exit 143, the run KILLED, no traceback; a second start resumes."""
    import signal
    import time

    import yaml

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data.update(profile="quick", train_recipes=["mlp"])
    data["train"]["device"] = "cpu"
    data["recipes"]["mlp"]["budgets"]["quick"] = {"epochs": 200, "train_subset": 300}
    (project / "params.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "stages/train.py"), "--arch", "mlp"], cwd=project, env=env,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if line.startswith("mlp epoch 2/200"):
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143
    assert "stopped: terminated (SIGTERM)" in rest and "Traceback" not in rest, "".join(seen) + rest
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("fmnist-quick").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert resume_module.state_path(project, project / "models/mlp").is_file()  # the next start resumes from it
