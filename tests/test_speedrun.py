"""`fmnist speedrun`: a fixed recipe timed by the speed-run rules over seeds, each seed an MLflow run under the
attempt's parent, the table of mean ± std printed; what cannot be a speed run refused in one line."""

import pytest
import torch
from mlflow import MlflowClient

from fmnist.core.config import load_params
from fmnist.core.errors import ConfigError
from fmnist.core.io import save_npz, write_json
from fmnist.data.prepare import CLASS_NAMES, normalisation_stats
from fmnist.data.tensors import DeviceDataset, Normalizer
from fmnist.training import speedrun as core
from fmnist.training.runtime import Runtime
from fmnist.workflows.speedrun import speed_record

from conftest import ROOT, synthetic_images


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    for name, n, seed in (("prepared/train", 600, 1), ("split/train", 500, 1), ("prepared/test", 200, 3)):
        x, y = synthetic_images(n, seed)
        save_npz(tmp_path / "data" / f"{name}.npz", x=x, y=y)
    write_json(tmp_path / "data/prepared/stats.json", {**normalisation_stats(synthetic_images(600, 1)[0]),
                                                       "classes": list(CLASS_NAMES)})
    return tmp_path


def tiny_run(**recipe):
    params = load_params(ROOT / "params.yaml", ["recipes.fastcnn.budgets.cpu.epochs=2",
                                                 "recipes.fastcnn.budgets.cpu.train_subset=null"], profile="cpu")
    run = params.run_of("fastcnn")
    return run.model_copy(update={"recipe": run.recipe.model_copy(update={"batch_size": 64, **recipe})})


def test_every_seed_is_a_run_under_the_attempt_and_the_table_gives_mean_and_spread(project):
    lines = []
    attempt = speed_record(tiny_run(), [42, 43], "all", root=project, echo=lines.append)
    assert [r.seed for r in attempt.results] == [42, 43] and attempt.n_train == 600
    assert all(r.seconds > 0 and 0 <= r.test_acc <= 1 and len(r.epochs) == 2 for r in attempt.results)
    table = attempt.table()
    assert "| **mean ± std (n=2)** |" in table and "Warm-up" in table and "all 10,000 test images" in table
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fmnist-cpu-speedrun")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_id == attempt.parent_run_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["seed"] for r in children) == ["42", "43"]
    assert parent.data.metrics["speedrun_n"] == 2 and parent.data.params["data"] == "all"
    mean = sum(r.data.metrics["speedrun_test_acc"] for r in children) / 2
    assert parent.data.metrics["speedrun_test_acc_mean"] == pytest.approx(mean)
    history = client.get_metric_history(children[0].info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parent.data.tags["fmnist.stage"] == "speedrun@fastcnn" and "git_commit" in parent.data.tags


def test_the_split_trains_on_its_own_images(project):
    attempt = speed_record(tiny_run(epochs=1), [42], "split", root=project, log=False)
    assert attempt.n_train == 500 and attempt.parent_run_id is None


def test_the_clock_covers_the_final_test_pass_and_nothing_scores_the_test_set_before(monkeypatch):
    """The test set is scored once, after the last epoch, and inside the timed span."""
    x, y = synthetic_images(300, 0)
    train = DeviceDataset(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype("int64")))
    calls = []
    real = core.evaluate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("batch_size", args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "evaluate", counting)
    recipe = tiny_run(epochs=2).recipe
    speed = core.SpeedRun(recipe, train, train, Normalizer(40.0, 60.0), Runtime(torch.device("cpu")), 10)
    result = speed.run(7)
    assert len(calls) == 1 and result.seconds >= result.epochs[-1].seconds


@pytest.mark.parametrize("change, message", [
    ({"scheduler": {"name": "plateau"}}, "a plateau schedule needs validation figures"),
    ({"finetune": {"enabled": True}}, "a speed run trains one phase"),
])
def test_what_chooses_by_validation_is_refused_in_one_line(change, message):
    recipe = tiny_run().recipe
    sections = {k: getattr(recipe, k).model_copy(update=v) for k, v in change.items()}
    with pytest.raises(ConfigError, match=message):
        core.check_speed_recipe("fastcnn", recipe.model_copy(update=sections))


def test_bad_inputs_are_one_line_before_any_work(project, capsys):
    from fmnist.cli import main

    with pytest.raises(ConfigError, match="--data: got 'most'"):
        speed_record(tiny_run(), [42], "most", root=project, log=False)
    with pytest.raises(ConfigError, match="scikit-learn baseline is one fit"):
        speed_record(load_params(ROOT / "params.yaml", [], profile="cpu").run_of("sk_logreg"), [42], root=project)
    with pytest.raises(SystemExit) as done:
        main(["speedrun", "fastcnn", "--seeds", "0", "--params", str(ROOT / "params.yaml")])
    assert done.value.code == 2 and "--seeds: got 0" in capsys.readouterr().err
    assert not (project / "mlflow.db").exists()
