"""The layers of params.yaml: bases and `extends:`, budgets, profiles as overlays, and a file that
survives DVC's own rewrite (`dvc exp run -S`)."""

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from fmnist.core.config import ConfigError, load_params, parse_file, parse_params
from fmnist.core.layers import merge

from conftest import ROOT
from test_workflows import project  # noqa: F401 (fixture)


def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def resolved_everywhere(data: dict) -> dict:
    """Every recipe under every profile, as plain data."""
    raw = parse_file(data)
    return {(profile, name): recipe.model_dump() for profile in raw.profiles
            for name, recipe in raw.resolve(profile).recipes.items()}


def test_nested_sections_merge_key_by_key_and_lists_are_replaced():
    base = {"scheduler": {"name": "cyclic", "max_lr": 0.1, "cycle_epochs": 4}, "model": {"widths": [1, 2]}}
    over = {"scheduler": {"max_lr": 0.05}, "model": {"widths": [3]}, "swa": {"enabled": True}}
    merged = merge(base, over)
    assert merged == {"scheduler": {"name": "cyclic", "max_lr": 0.05, "cycle_epochs": 4}, "model": {"widths": [3]},
                      "swa": {"enabled": True}}
    merged["swa"]["enabled"] = False
    merged["scheduler"]["name"] = "none"
    assert over["swa"] == {"enabled": True} and base["scheduler"]["name"] == "cyclic"  # the layers stay as written
    # an empty section over a base's changes nothing; a value replaces a value
    assert merge({"a": {"b": 1}, "d": 1}, {"a": None, "d": None}, {"c": [1]}) == {"a": {"b": 1}, "d": None, "c": [1]}


def test_an_empty_section_in_a_recipe_keeps_its_bases_section():
    data = repo_params()
    data["recipes"]["fast92"]["augment"] = None
    assert parse_params(data).recipe("fast92").augment.hflip == 0.5  # the `fast` base's


def test_a_base_change_reaches_every_recipe_that_extends_it_and_no_other():
    data = repo_params()
    before = resolved_everywhere(data)
    data["recipe_bases"]["cyclic_swa"]["swa"]["lr"] = 0.02
    after = resolved_everywhere(data)
    changed = {name for key, name in after if after[(key, name)] != before[(key, name)]}
    assert changed == {"basic_cnn", "mini_vgg", "wrn16_4", "resnet18", "resnet34", "mobilenet_v2", "shufflenet_v2",
                       "shakeshake_resnet34"}  # cyclic_swa_small passes it on to basic_cnn and mini_vgg
    assert after[("full", "basic_cnn")]["optimizer"]["lr"] == 0.005  # the small base's own keys stay


def test_a_recipe_may_extend_several_bases_the_later_winning():
    data = repo_params()
    data["recipe_bases"]["fast_lr"] = {"optimizer": {"lr": 0.002}}
    data["recipes"]["fast92"]["extends"] = ["fast", "fast_lr"]
    recipe = parse_params(data).recipe("fast92")
    assert (recipe.optimizer.name, recipe.optimizer.lr, recipe.network) == ("adamw", 0.002, "fastcnn")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["recipes"]["cnn1"].update(extends="keras"),
     "recipes.cnn1.extends: unknown base 'keras'; recipe_bases has: cyclic_swa, cyclic_swa_small, fast, "
     "gpu_onecycle, gpu_speed, keras_adam"),
    (lambda d: d["recipe_bases"]["cyclic_swa"].update(extends="cyclic_swa_small"),
     "recipe_bases.cyclic_swa.extends: a cycle of bases (cyclic_swa_small -> cyclic_swa -> cyclic_swa_small)"),
    (lambda d: d["recipe_bases"]["fast"].update(extends="fast"), "a cycle of bases (fast -> fast)"),
    (lambda d: d["recipe_bases"]["keras_adam"].update(optimiser={"lr": 1}),
     "recipe_bases.keras_adam.optimiser: unknown key; allowed keys: network, model, init"),
    (lambda d: d["recipe_bases"]["keras_adam"]["optimizer"].update(lr="fast"),
     "recipe_bases.keras_adam.optimizer.lr: got 'fast', expected a number"),
    (lambda d: d["recipe_bases"]["onecycle_cpu"].update(extends=3), "recipe_bases.onecycle_cpu.extends: got 3"),
    (lambda d: d["recipe_bases"].update({"bad name": {}}), "recipe base name 'bad name': use letters, digits"),
])
def test_bad_bases_fail_in_one_line_naming_the_key_and_the_fix(tmp_path, edit, message):
    data = repo_params()
    edit(data)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def with_profile(data: dict, name: str = "edge") -> dict:
    """A new profile added the only way a user adds one: entries in params.yaml."""
    data = copy.deepcopy(data)
    data["profiles"][name] = {"about": "a profile only this test defines", "experiment": f"fmnist-{name}",
                              "registered_model": f"fmnist-{name}-classifier", "budget": {"epochs": 2},
                              "train": {"deterministic": False}}
    data["recipes"]["mlp"]["budgets"][name] = {"train_subset": 300, "seeds": 2}
    return data


def test_a_profile_is_an_edit_of_params_alone():
    params = parse_params(with_profile(repo_params()), "edge")
    assert (params.experiment, params.registered_model) == ("fmnist-edge", "fmnist-edge-classifier")
    assert params.train.deterministic is False and parse_params(repo_params(), "full").train.deterministic
    mlp, cnn4 = params.recipe("mlp"), params.recipe("cnn4")
    assert (mlp.epochs, mlp.seeds, mlp.train_subset) == (2, 2, 300)  # the profile's default under its own budget
    assert cnn4.epochs == 2 and cnn4.optimizer.name == "adam"  # no budget of its own: the profile's defaults


def test_a_new_profile_trains_and_goes_to_its_own_experiment(project, tmp_path):  # noqa: F811
    from mlflow import MlflowClient

    from fmnist.core.runs import read_pointer
    from fmnist.workflows.train import TrainPaths, train_architecture

    data = with_profile(repo_params())
    data.update(profile="edge", train_recipes=["mlp"])
    data["train"]["device"] = "cpu"
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(data))
    summary = train_architecture(load_params(path).run_of("mlp"), TrainPaths.for_arch("mlp"))
    run = MlflowClient().get_run(read_pointer(project / "models/mlp").run_id)
    assert summary.epochs_run == 2 and run.data.params["profile"] == "edge"
    assert run.data.params["deterministic"] == "False" and run.data.params["network"] == "mlp"
    assert MlflowClient().get_experiment(run.info.experiment_id).name == "fmnist-edge"


def test_the_cli_takes_its_profiles_from_the_params(tmp_path, capsys):
    from fmnist.cli import main

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_profile(repo_params()), sort_keys=False))

    def fmnist(*args):
        with pytest.raises(SystemExit) as done:
            main([*args, "--params", str(path)])
        out, err = capsys.readouterr()
        return done.value.code, out, err

    code, out, _ = fmnist("profiles")
    assert code == 0 and "edge" in out and "fmnist-edge" in out
    code, out, err = fmnist("recipe", "mlp", "--profile", "edge")
    assert code == 0, err
    assert yaml.safe_load(out)["train_subset"] == 300 and "profile 'edge'" in out
    assert fmnist("profile", "edge")[0] == 0 and yaml.safe_load(path.read_text())["profile"] == "edge"
    code, _, err = fmnist("profile", "tpu")
    assert code == 2 and "allowed values: full, gpu, cpu, quick, edge" in err


def test_dvc_exp_run_rewrites_the_file_without_changing_any_recipe(tmp_path):
    """`dvc exp run -S` dumps params.yaml through DVC's own YAML writer (flow lists become block lists, null an
    empty value): plain YAML without anchors or includes means every resolved recipe is unchanged but the one
    set."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (repo / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: python -c \"print('ran')\"\n    params: [recipes]\n")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"],
                [*dvc, "exp", "run", "-S", "recipes.cnn4.budgets.quick.epochs=3"]):
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    rewritten = (repo / "params.yaml").read_text()
    assert rewritten != (ROOT / "params.yaml").read_text()  # DVC did rewrite it
    before, after = resolved_everywhere(repo_params()), resolved_everywhere(yaml.safe_load(rewritten))
    changed = {key: after[key]["epochs"] for key in before if before[key] != after[key]}
    assert changed == {("quick", "cnn4"): 3}


def test_the_resolve_stage_writes_one_file_per_recipe_of_the_dag(tmp_path):
    from fmnist.core.config import RecipeRun

    out = tmp_path / "resolved"
    done = subprocess.run([sys.executable, str(ROOT / "stages/resolve.py"), "--out", str(out),
                           "--set", "profile=cpu"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    params = load_params(ROOT / "params.yaml", profile="cpu")
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(params.train_recipes)
    cnn4 = RecipeRun.read(out / "cnn4.json")
    assert cnn4 == params.run_of("cnn4") and cnn4.recipe.scheduler.name == "onecycle"
    assert json.loads((out / "cnn4.json").read_text())["experiment"] == "fmnist-cpu"
