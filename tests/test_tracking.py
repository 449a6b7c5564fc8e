import os
import signal

import mlflow
import pytest

from fmnist import tracking
from fmnist.core.errors import StoreError
from fmnist.core.runs import EpochRecord


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    tracking.configure(tmp_path)
    return tmp_path


def status_of(run_id):
    return mlflow.get_run(run_id).info.status


def test_embedded_default_is_sqlite_with_artifacts_beside_it(store):
    with tracking.tracked_run("exp", run_name="mlp", root=store) as run:
        mlflow.log_text("hi", "a.txt")
    assert (store / "mlflow.db").is_file()
    assert (store / "mlartifacts" / "exp").is_dir()
    assert status_of(run.info.run_id) == "FINISHED"
    assert mlflow.get_run(run.info.run_id).info.run_name == "mlp"
    # says it holds model training, not GenAI traces (fmnist ui's links pick the UI's pages)
    assert mlflow.get_experiment_by_name("exp").tags["mlflow.experimentKind"] == "custom_model_development"


def test_environment_uri_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    assert tracking.configure(tmp_path / "elsewhere") == f"sqlite:///{tmp_path / 'other.db'}"


def test_crash_ends_failed(store):
    with pytest.raises(RuntimeError):
        with tracking.tracked_run("exp", root=store) as run:
            raise RuntimeError("boom")
    assert status_of(run.info.run_id) == "FAILED"


def test_ctrl_c_and_sigterm_end_killed(store):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with tracking.tracked_run("exp", root=store) as run:
            raise KeyboardInterrupt
    assert status_of(run.info.run_id) == "KILLED"
    with pytest.raises(tracking.Terminated):
        with tracking.tracked_run("exp", root=store) as run:
            os.kill(os.getpid(), signal.SIGTERM)
    assert status_of(run.info.run_id) == "KILLED"
    assert signal.getsignal(signal.SIGTERM) == before  # our handler is removed again


def test_epoch_metrics_use_epoch_as_step_and_later_results_keep_the_status(store, tmp_path):
    with tracking.tracked_run("exp", tags={"a": "1"}, root=store) as run:
        tracking.log_epoch(EpochRecord(epoch=1, train_acc=0.4, val_acc=0.5, epoch_seconds=1.0, cumulative_seconds=1.0))
        tracking.log_epoch(EpochRecord(epoch=2, train_acc=0.5, val_acc=0.6, epoch_seconds=1.0, cumulative_seconds=2.0))
    client = mlflow.MlflowClient()
    png = tmp_path / "c.png"
    png.write_bytes(b"png")
    tracking.log_to_finished_run(client, run.info.run_id, {"final_test_acc": 0.7}, [(png, "evaluation")],
                                 {"evaluation/t.csv": "a,b\n"}, {"b": "2"})
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    finished = mlflow.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["a"] == "1" and finished.data.tags["b"] == "2"
    assert finished.data.metrics["final_test_acc"] == 0.7
    assert {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")} == {"evaluation/c.png",
                                                                                     "evaluation/t.csv"}


def test_a_run_missing_from_the_store_is_a_clear_error(store):
    with pytest.raises(StoreError, match="models/mlp/run.json: MLflow run 0123 is not in the tracking store"):
        tracking.existing_run(mlflow.MlflowClient(), "0123", "models/mlp/run.json")


def test_runs_nest_under_mlflow_run_project_run(store, monkeypatch):
    with tracking.tracked_run("exp", root=store) as parent:
        pass
    monkeypatch.setenv("MLFLOW_RUN_ID", parent.info.run_id)
    with tracking.tracked_run("exp", root=store) as child:
        pass
    assert mlflow.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_base_tags_record_commit_stage_and_data_hashes(tmp_path):
    tags = tracking.base_tags("train@mlp", {"train": "abc"}, root=tmp_path)
    assert tags["fmnist.stage"] == "train@mlp" and tags["data_sha256.train"] == "abc"
    assert tags["git_commit"] == "unknown"  # tmp_path is not a git checkout
    env = tracking.environment_tags("cpu")
    assert env["device"] == "cpu" and env["torch_version"]


def test_environment_tags_name_the_gpus_and_threads_the_process_was_given(monkeypatch):
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = tracking.environment_tags("cpu")
    assert env["cuda_visible_devices"] == "1" and env["torch_threads"] == str(torch.get_num_threads())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert tracking.environment_tags()["cuda_visible_devices"] == "(unset)"
