"""fmnist sweep on a tiny budget: two worker processes share one SQLite study and one MLflow store; one is SIGKILLed
in the middle of a trial. The sweep still reaches its count, the dead trial is failed by its heartbeat, its MLflow run
closed as KILLED and the trial retried; nothing stays RUNNING; the best keys go into params.yaml, comments kept."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, synthetic_images

TINY = ("  tiny: {recipe: mlp, profile: quick, trials: 3, fixed: {epochs: 6},\n"
        "         space: {optimizer.lr: {low: 0.01, high: 0.1, log: true}, augment.translate: {choices: [0, 1]},\n"
        "                 scheduler: {choices: {plateau: {name: plateau}, cosine: {name: cosine}}}},\n"
        "         pruner: {startup_trials: 2, warmup_epochs: 2}}\n")


def fmnist(*args: str) -> int:
    from fmnist.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    return done.value.code


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> bytes:
    """An MLflow SQLite store with its schema: made once, as creating the tables costs seconds."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path.read_bytes()


@pytest.fixture
def project(tmp_path, monkeypatch, empty_store):
    """A working copy: params.yaml with the tiny sweep, a synthetic split, its own MLflow store and study file."""
    text = (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("\nsweeps:\n", "\nsweeps:\n" + TINY, 1))
    for folder, name, n in (("split", "train", 2000), ("split", "val", 200), ("prepared", "test", 200)):
        x, y = synthetic_images(n, seed=n)
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp_path / "data" / folder / f"{name}.npz", x=x, y=y.astype(np.int64))
    (tmp_path / "data/prepared/stats.json").write_text(
        '{"mean": 0.2, "std": 0.3, "classes": ["c0","c1","c2","c3","c4","c5","c6","c7","c8","c9"]}')
    (tmp_path / "mlflow.db").write_bytes(empty_store)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FMNIST_SWEEP_STORAGE", f"sqlite:///{tmp_path / 'study.db'}")
    return tmp_path


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1].strip() for line in text.splitlines() if "#" in line]


def running_runs(db: Path, pid: int | None = None) -> list[str]:
    """The RUNNING runs (of process `pid`, once they have logged an epoch: a trial under way)."""
    query = "select r.run_uuid from runs r where r.status = 'RUNNING'"
    args: tuple = ()
    if pid is not None:
        query += " and exists (select 1 from tags t where t.run_uuid = r.run_uuid and t.key = 'fmnist.pid' and " \
                 "t.value = ?) and exists (select 1 from metrics m where m.run_uuid = r.run_uuid and m.key = 'val_acc')"
        args = (str(pid),)
    if not db.is_file():
        return []
    with sqlite3.connect(db, timeout=30) as con:
        return [row[0] for row in con.execute(query, args)]


def start_worker(project: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fmnist.cli", "sweep", "worker", "tiny", "--threads", "1"],
                            cwd=project, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_two_workers_one_killed_mid_trial_finish_the_sweep_and_leave_nothing_running(project):
    import optuna
    from mlflow import MlflowClient

    assert fmnist("sweep", "create", "tiny", "--heartbeat", "1") == 0
    doomed, survivor = start_worker(project), start_worker(project)
    deadline = time.monotonic() + 90
    while not running_runs(project / "mlflow.db", doomed.pid):
        assert time.monotonic() < deadline and doomed.poll() is None, "the first worker never ran a trial"
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert survivor.wait(timeout=150) == 0, survivor.stderr.read()[-2000:]

    study = optuna.load_study(study_name="tiny", storage=os.environ["FMNIST_SWEEP_STORAGE"])
    states = [t.state for t in study.trials]
    finished = states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED)
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and finished >= 3, states
    assert not {optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING} & set(states), states
    dead = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert any(t.system_attrs.get("failed_trial") == dead.number for t in study.trials), "not retried"

    assert running_runs(project / "mlflow.db") == []
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("fmnist-quick-sweep").experiment_id])
    killed = next(r for r in runs if r.data.tags["fmnist.sweep.trial"] == str(dead.number))
    assert killed.info.status == "KILLED" and "heartbeat" in killed.data.tags["fmnist.end_reason"]
    assert all(r.data.tags["fmnist.sweep"] == "tiny" for r in runs) and len(runs) == len(study.trials)
    assert any(r.data.metrics.get("val_acc") is not None for r in runs)  # per-epoch metrics logged

    before = (project / "params.yaml").read_text()
    assert fmnist("sweep", "apply", "tiny") == 0
    after = (project / "params.yaml").read_text()
    assert comments(after) == comments(before)
    from fmnist.core.config import load_params

    lr = load_params(project / "params.yaml", profile="quick").recipes["mlp"].optimizer.lr
    assert lr == pytest.approx(study.best_trial.params["optimizer.lr"])
    assert load_params(project / "params.yaml", profile="cpu").recipes["mlp"].optimizer.lr == 0.05  # others kept


def test_a_seed_grid_runs_each_seed_once_in_one_seed_group(project):
    from mlflow import MlflowClient

    assert fmnist("sweep", "create", "tiny", "--seeds", "2") == 0
    assert fmnist("sweep", "worker", "tiny-seeds", "--threads", "1") == 0
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("fmnist-quick-sweep").experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["42", "43"]
    assert {r.data.tags["fmnist.seed_group"] for r in runs} == {"tiny-seeds"}
    assert [r.data.tags["fmnist.primary"] for r in sorted(runs, key=lambda r: r.data.params["seed"])] == ["true",
                                                                                                         "false"]


@pytest.mark.parametrize("edit, says", [
    ("optimizer.lr: {low: 0.01", "optimizer.lrr: {low: 0.01"),
    ("{low: 0.01, high: 0.1, log: true}", "{low: 0.1, high: 0.01, log: true}"),
    ("choices: [0, 1]", "choices: [0, 9]"),
])
def test_a_bad_sweep_is_one_line_before_any_work(project, capsys, edit, says):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace(edit, says, 1))
    assert fmnist("sweep", "create", "tiny") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "sweeps.tiny" in err and len(err.splitlines()) == 1, err
    assert not (project / "study.db").exists()


def test_write_back_changes_only_the_recipes_budgets_and_keeps_every_comment(tmp_path):
    from fmnist.params_edit import set_budget_keys

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    resolved = set_budget_keys(params, "mlp", "cpu", {"recipe.optimizer.lr": 0.0123, "epochs": 12})
    assert resolved.recipes["mlp"].optimizer.lr == 0.0123 and resolved.recipes["mlp"].epochs == 12
    old, new = (ROOT / "params.yaml").read_text().splitlines(), params.read_text().splitlines()
    changed = [line for line in old if line not in new]
    assert changed and all(line.lstrip().startswith(("budgets:", "gpu:")) for line in changed), changed
    assert comments(params.read_text()) == comments((ROOT / "params.yaml").read_text())
    was, now = yaml.safe_load((ROOT / "params.yaml").read_text()), yaml.safe_load(params.read_text())
    del now["recipes"]["mlp"]["budgets"]["cpu"], was["recipes"]["mlp"]["budgets"]["cpu"]
    assert now == was


def test_the_mlflow_database_is_refused_as_a_study_storage(project, capsys):
    assert fmnist("sweep", "create", "tiny", "--storage", f"sqlite:///{project / 'mlflow.db'}") == 2
    assert "holds MLflow's tables" in capsys.readouterr().err


def test_a_trial_failed_by_another_worker_while_it_runs_here_stays_failed_and_the_worker_goes_on(tmp_path):
    """Another worker's heartbeat rule fails the trial in the middle (this worker was frozen, or the database was away
    longer than the grace period): noticed at the next report or at the end, the trial stays failed (its retry is
    the other worker's) and this worker goes on."""
    import optuna
    from optuna.trial import TrialState

    from fmnist.sweep.worker import run_trial

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=60)
    study = optuna.create_study(storage=storage)

    class FailedElsewhere:
        def __init__(self, reports: bool):
            self.reports, self.taken = reports, []

        def __call__(self, trial) -> float:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            if self.reports:
                trial.report(0.5, 1)
            return 0.9

        def taken_over(self, number: int) -> None:
            self.taken.append(number)

    for reports in (True, False):
        objective = FailedElsewhere(reports)
        run_trial(study, objective, 60)
        assert objective.taken == [study.trials[-1].number]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_the_heartbeat_and_a_trials_reports_go_on_through_a_database_outage(monkeypatch):
    """A dropped connection (PostgreSQL restarted) fails two writes; the heartbeat beats again afterwards (Optuna's
    own thread ended at the first failure, and the live trial then looked dead), and a report is tried again."""
    from types import SimpleNamespace

    import optuna
    import sqlalchemy.exc

    from fmnist.sweep import worker

    monkeypatch.setattr(worker, "RETRY_S", 0.01)
    monkeypatch.setattr(worker, "STORE_OUTAGE_S", 5)  # a broken retry fails here, not after 5 minutes

    class Flaky:
        def __init__(self):
            self.calls, self.done = 0, []

        def __call__(self, trial_id: int) -> int:
            self.calls += 1
            if self.calls <= 2:
                dropped = sqlalchemy.exc.OperationalError("select", {}, Exception("server closed the connection"))
                raise optuna.exceptions.StorageInternalError("commit failed") from dropped
            self.done.append(trial_id)
            return trial_id

    beats = Flaky()
    with worker.Heartbeat(SimpleNamespace(_storage=SimpleNamespace(record_heartbeat=beats)),
                          SimpleNamespace(_trial_id=7, number=3), 0.01):
        deadline = time.monotonic() + 10
        while len(beats.done) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert beats.done[:2] == [7, 7]
    report = Flaky()
    assert worker.through_outage(lambda: report(5), "a report") == 5 and report.calls == 3
    with pytest.raises(ValueError):
        worker.through_outage(lambda: int("x"), "not the database")
