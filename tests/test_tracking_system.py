"""System metrics on training runs (fmnist/tracking/system.py): sampled into the run, switched by the environment."""

import time

import mlflow
import pytest

from fmnist import tracking
from fmnist.core.errors import ConfigError
from fmnist.tracking import system


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    for name in ("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING"):
        monkeypatch.setenv(name, "")  # restored to unset after the test: prepare() sets them
    tracking.configure(tmp_path)
    return tmp_path


@pytest.mark.parametrize("value, seconds", [(None, 10.0), ("", 10.0), ("5", 5.0), ("2.5", 2.5), ("off", None),
                                            ("OFF", None), ("0", None), ("false", None)])
def test_the_sampling_interval_comes_from_the_environment(value, seconds):
    assert system.sampling_interval({} if value is None else {system.ENV: value}) == seconds


@pytest.mark.parametrize("value", ["often", "0.2", "-3", "nan"])
def test_a_bad_interval_is_one_line_naming_the_fix(value):
    with pytest.raises(ConfigError, match=r"FMNIST_SYSTEM_METRICS=.* seconds >= 1 \(e\.g\. 10\) or to off"):
        system.sampling_interval({system.ENV: value})


def test_a_training_run_samples_cpu_and_memory_into_the_run(store, monkeypatch):
    monkeypatch.setenv(system.ENV, "1")
    with tracking.tracked_run("exp", run_name="mlp", root=store, system_metrics=True) as run:
        time.sleep(2.5)
    logged = mlflow.get_run(run.info.run_id).data
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(logged.metrics)
    assert logged.tags[system.TAG] == "every 1 s"
    steps = mlflow.MlflowClient().get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert len(steps) >= 2  # sampled again and again, not once


def test_switched_off_the_run_says_so_and_holds_no_system_metrics(store, monkeypatch):
    monkeypatch.setenv(system.ENV, "off")
    with tracking.tracked_run("exp", root=store, system_metrics=True) as run:
        time.sleep(1.2)
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.tags[system.TAG] == "off"
    assert not any(key.startswith("system/") for key in logged.metrics)


def test_runs_that_do_not_train_are_not_sampled(store, monkeypatch):
    monkeypatch.setenv(system.ENV, "1")
    with tracking.tracked_run("exp", run_name="report", root=store) as run:
        time.sleep(1.2)
    logged = mlflow.get_run(run.info.run_id).data
    assert system.TAG not in logged.tags and not any(key.startswith("system/") for key in logged.metrics)
