"""The stage workflows in-process on tiny synthetic data, with a throw-away MLflow store: what each
writes, what it logs, and that the three agree through the one run record."""

import json

import pytest
import yaml
from mlflow import MlflowClient

from fmnist.core.config import parse_params
from fmnist.core.errors import DeviceError, OutputError, StoreError
from fmnist.core.io import save_npz, write_json
from fmnist.core.runs import read_history, read_pointer, read_summary
from fmnist.core.seeds import split_spread
from fmnist.data.prepare import CLASS_NAMES, normalisation_stats
from fmnist.training.plan import plan_run
from fmnist.workflows.evaluate import EvalPaths, evaluate_architecture
from fmnist.workflows.report import ReportPaths, ReportSettings, write_report
from fmnist.workflows.train import TrainPaths, train_architecture

from conftest import ROOT, synthetic_images


def tiny_params(**overrides):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data.update(profile="quick", train_recipes=["mlp", "sk_logreg"])
    data["train"]["device"] = "cpu"
    data["recipes"]["mlp"]["budgets"]["quick"] = {"epochs": 3, "train_subset": 300}
    data["recipes"]["sk_logreg"]["budgets"]["quick"] = {"model": {"max_iter": 20}}
    for key, value in overrides.items():
        data["train"][key] = value
    return parse_params(data)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory with prepared and split data, and its own MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name, n, seed in (("split/train", 400, 1), ("split/val", 100, 2), ("prepared/test", 100, 3)):
        x, y = synthetic_images(n, seed)
        save_npz(tmp_path / "data" / f"{name}.npz", x=x, y=y)
    write_json(tmp_path / "data/prepared/stats.json", {**normalisation_stats(synthetic_images(400, 1)[0]),
                                                       "classes": CLASS_NAMES})
    return tmp_path


def train_and_evaluate(arch, params):
    summary = train_architecture(params.run_of(arch), TrainPaths.for_arch(arch))
    evaluation = evaluate_architecture(arch, params.train, params.evaluate, EvalPaths.for_arch(arch))
    return summary, evaluation


def test_train_writes_one_consistent_record_and_logs_it(project):
    summary, evaluation = train_and_evaluate("mlp", tiny_params())
    pointer = read_pointer(project / "models/mlp")
    history = read_history(project / "metrics/history/mlp.csv")
    recorded, spread = split_spread(read_summary(project / "metrics/train/mlp.json"))
    assert recorded == summary
    assert spread.n_seeds == 1 and spread.test_acc_mean == summary.selected_test_acc and spread.test_acc_std is None
    assert [r.epoch for r in history] == [1, 2, 3] and summary.epochs_run == 3
    assert summary.best_val_acc == max(r.val_acc for r in history) > 0.3  # the bands are learnable
    run = MlflowClient().get_run(pointer.run_id)
    assert run.info.status == "FINISHED" and run.data.params["arch"] == "mlp"
    for key in ("train_loss", "val_acc", "test_acc", "lr", "cumulative_seconds"):
        logged = [(m.step, m.value) for m in MlflowClient().get_metric_history(pointer.run_id, key)]
        assert logged == [(r.epoch, getattr(r, key)) for r in history], key
    assert run.data.metrics["best_val_acc"] == summary.best_val_acc
    assert run.data.metrics["final_test_acc"] == evaluation.test_acc  # evaluate wrote into the same run
    assert json.loads((project / "metrics/eval/mlp.json").read_text())["n_test"] == 100


def test_a_baseline_goes_through_the_same_workflow(project):
    summary, evaluation = train_and_evaluate("sk_logreg", tiny_params())
    assert summary.kind == "sklearn" and summary.selected == "fit" and summary.epochs_run == 1
    run = MlflowClient().get_run(read_pointer(project / "models/sk_logreg").run_id)
    assert "recipe.optimizer.name" not in run.data.params  # a baseline logs only what applies to it
    assert run.data.metrics["final_test_acc"] == evaluation.test_acc > 0.5


def test_report_builds_the_leaderboard_from_the_records(project):
    params = tiny_params()
    for arch in params.train_recipes:
        train_and_evaluate(arch, params)
    paths = ReportPaths(models_dir=project / "models", train_metrics_dir=project / "metrics/train",
                        eval_metrics_dir=project / "metrics/eval", history_dir=project / "metrics/history",
                        eval_figures_dir=project / "reports/eval", out_dir=project / "reports",
                        summary_metrics=project / "metrics/summary.json")
    settings = ReportSettings(params.experiment, params.profile, params.train_recipes,
                              params.report.diminishing_returns_tolerance, params.registered_model)
    result = write_report(settings, paths)
    board = {row["arch"]: row for row in result["leaderboard"]}
    assert set(board) == {"mlp", "sk_logreg"}
    assert board["mlp"]["run_id"] == read_pointer(project / "models/mlp").run_id
    assert board["mlp"]["best_val_acc"] == read_summary(project / "metrics/train/mlp.json").best_val_acc
    # the champion: best validation accuracy, ties to the smaller model
    best = max(board.values(), key=lambda r: (r["best_val_acc"], -r["num_params"]))
    assert result["champion"]["arch"] == best["arch"]


def test_evaluate_refuses_a_run_the_store_does_not_hold(project, monkeypatch):
    params = tiny_params()
    train_architecture(params.run_of("mlp"), TrainPaths.for_arch("mlp"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'other.db'}")
    with pytest.raises(StoreError, match="is not in the tracking store"):
        evaluate_architecture("mlp", params.train, params.evaluate, EvalPaths.for_arch("mlp"))
    assert not (project / "metrics/eval/mlp.json").exists()


def test_evaluate_without_training_names_the_missing_pointer(project):
    with pytest.raises(OutputError, match="run.json: not found"):
        evaluate_architecture("mlp", tiny_params().train, tiny_params().evaluate, EvalPaths.for_arch("mlp"))


def test_plan_resolves_each_kind_once():
    params = tiny_params()
    network, baseline = plan_run(params.run_of("mlp")), plan_run(params.run_of("sk_logreg"))
    assert network.runtime is not None and network.device.type == "cpu" and network.recipe.epochs == 3
    assert baseline.runtime is None and baseline.model_options["random_state"] == params.train.seed
    assert baseline.logged_params({"train": 1})["epochs"] == 1


def test_plan_refuses_an_unavailable_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA device is available"):
        plan_run(tiny_params(device="cuda").run_of("mlp"))


def seeded_params(seeds=2):
    params = tiny_params()
    recipes = {**params.recipes, "mlp": params.recipes["mlp"].model_copy(update={"seeds": seeds})}
    return params.model_copy(update={"recipes": recipes})


def test_seeds_are_runs_of_one_group_and_the_stage_keeps_them_all(project):
    summary = train_architecture(seeded_params(3).run_of("mlp"), TrainPaths.for_arch("mlp"))
    pointer = read_pointer(project / "models/mlp")
    recorded, spread = split_spread(read_summary(project / "metrics/train/mlp.json"))
    assert recorded == summary and spread.n_seeds == 3
    client = MlflowClient()
    first = client.get_run(pointer.run_id)
    assert (first.data.params["seed"], first.data.tags["fmnist.primary"]) == ("42", "true")
    group = client.search_runs([first.info.experiment_id],
                               f"tags.`fmnist.seed_group` = '{first.data.tags['fmnist.seed_group']}'")
    assert sorted(r.data.params["seed"] for r in group) == ["42", "43", "44"]
    assert all(r.info.status == "FINISHED" for r in group)
    later = {r.data.params["seed"]: r for r in group if r.data.tags["fmnist.primary"] == "false"}
    tests = [summary.selected_test_acc]
    for seed in ("43", "44"):
        folder = project / "models/mlp/seeds" / seed
        assert read_pointer(folder).run_id == later[seed].info.run_id and (folder / "model.pt").is_file()
        tests.append(read_summary(folder / "summary.json").selected_test_acc)
        assert len(read_history(folder / "history.csv")) == 3
    assert spread.test_acc_mean == pytest.approx(sum(tests) / 3)
    # the spread is on the stage's own run too, for the UI's columns; not on the later seeds' runs
    assert first.data.metrics["seeds_test_acc_mean"] == pytest.approx(spread.test_acc_mean)
    assert first.data.metrics["seeds_test_acc_std"] == pytest.approx(spread.test_acc_std)
    assert first.data.metrics["seeds_n"] == 3
    assert all("seeds_n" not in r.data.metrics for r in later.values())
    assert not (project / ".fmnist/seeds").exists() or not any((project / ".fmnist/seeds").iterdir())


def test_a_failed_first_seed_keeps_the_last_outputs_and_the_rerun_reuses_finished_seeds(project, monkeypatch):
    import fmnist.workflows.train as train_workflow

    train_architecture(seeded_params(1).run_of("mlp"), TrainPaths.for_arch("mlp"))
    before = {p: p.read_bytes() for p in (project / "models/mlp").rglob("*") if p.is_file()}
    before_summary = (project / "metrics/train/mlp.json").read_bytes()
    real = train_workflow.run_training

    def first_seed_fails(plan, *args, **kwargs):
        if plan.seed == 42:
            raise OutputError("simulated failure of the first seed")
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(train_workflow, "run_training", first_seed_fails)
    with pytest.raises(OutputError, match="simulated"):
        train_architecture(seeded_params(2).run_of("mlp"), TrainPaths.for_arch("mlp"))
    assert {p: p.read_bytes() for p in (project / "models/mlp").rglob("*") if p.is_file()} == before
    assert (project / "metrics/train/mlp.json").read_bytes() == before_summary
    seed_runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("fmnist-quick").experiment_id],
                                           "params.seed = '43'")
    assert len(seed_runs) == 1
    monkeypatch.setattr(train_workflow, "run_training", real)
    train_architecture(seeded_params(2).run_of("mlp"), TrainPaths.for_arch("mlp"))
    again = MlflowClient().search_runs([seed_runs[0].info.experiment_id], "params.seed = '43'")
    assert [r.info.run_id for r in again] == [seed_runs[0].info.run_id]  # reused, not retrained
    assert read_pointer(project / "models/mlp/seeds/43").run_id == seed_runs[0].info.run_id
    _, spread = split_spread(read_summary(project / "metrics/train/mlp.json"))
    first = MlflowClient().get_run(read_pointer(project / "models/mlp").run_id)
    assert spread.n_seeds == 2 and again[0].data.tags["fmnist.seed_group"] == first.data.tags["fmnist.seed_group"]
