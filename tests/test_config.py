import pytest
import yaml

from fmnist.core.config import ConfigError, apply_overrides, load_file, load_params, parse_file, parse_params
from fmnist.core.errors import DeviceError
from fmnist.models.checks import check_every_profile, check_params
from fmnist.training.plan import plan_run

from conftest import ROOT


def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_resolve_for_every_profile_they_define():
    raw = load_file(ROOT / "params.yaml")
    assert set(raw.profiles) >= {"full", "cpu", "quick"}
    for name in raw.profiles:
        params = raw.resolve(name)
        assert params.experiment == raw.profiles[name].experiment
        check_params(params)
        assert all(params.recipe(r).epochs >= 1 for r in params.train_recipes)


BAD_VALUES = [
    (lambda d: d["recipes"]["cnn4"]["budgets"]["quick"].update(epochs=0),
     "recipes.cnn4.budgets.quick.epochs: got 0, allowed range [1"),
    (lambda d: d["recipe_bases"]["keras_adam"]["budgets"]["full"].update(epochs=0),
     "recipe_bases.keras_adam.budgets.full.epochs: got 0, allowed range [1"),
    (lambda d: d["split"].update(val_fraction=1.0), "split.val_fraction: got 1.0, allowed range (0, 1)"),
    (lambda d: d["split"].update(val_fraction=0), "split.val_fraction: got 0.0, allowed range (0, 1)"),
    (lambda d: d["train"].update(devise="cpu"), "train.devise: unknown key in train; allowed keys: seed, device"),
    (lambda d: d.update(epochs=3), "epochs: unknown key in params.yaml; allowed keys: profile"),
    (lambda d: d["recipes"]["mlp"].update(batch_size="big"), "recipes.mlp.batch_size: got 'big', expected an integer"),
    (lambda d: d["recipes"]["mlp"]["optimizer"].update(name="rmsprop"),
     "recipes.mlp.optimizer.name: got 'rmsprop', allowed values: adam, adamw, sgd"),
    (lambda d: d["train"].update(device="tpu"), "train.device: got 'tpu', allowed values: auto, cpu, cuda"),
    (lambda d: d.update(profile="fast"),
     "profile: got 'fast', allowed values: full, gpu, cpu, quick (the names under profiles:"),
    (lambda d: d["recipes"]["cnn4"].update(optimizer={"nesterov": True}), "Nesterov momentum needs name: sgd"),
    (lambda d: d["preprocess"].update(classes=[0, 11]), "preprocess.classes: got [0, 11]"),
    (lambda d: d["train"].update(deterministic="yes"), "train.deterministic: got 'yes', expected true or false"),
    (lambda d: d["split"].update(seed=-1), "split.seed: got -1, allowed range [0, 4294967295]"),
    (lambda d: d.update(train_recipes=[]), "train_recipes: got [], expected a non-empty list without repeats"),
    (lambda d: d.update(train_recipes=["mlp", "mlp"]), "train_recipes: got ['mlp', 'mlp']"),
    (lambda d: d.update(train_recipes=["mlp", "vgg99"]), "train_recipes[1]: no recipe 'vgg99' under recipes:"),
    (lambda d: d["profiles"]["quick"].update(experiment="fmnist"),
     "profiles.full.experiment: every profile needs its own experiment"),
    (lambda d: d["profiles"]["quick"].pop("registered_model"), "profiles.quick.registered_model: missing"),
    (lambda d: d["recipes"]["cnn4"]["budgets"]["quick"].update(train_subset=5),
     "recipes.cnn4.budgets.quick.train_subset: got 5"),
    (lambda d: d["recipes"]["cnn4"]["budgets"].update(tpu={"epochs": 3}),
     "recipes.cnn4.budgets.tpu: no profile 'tpu' in profiles: (it has full, gpu, cpu, quick)"),
    (lambda d: d["recipes"]["cnn4"].pop("network"), "recipes.cnn4.network: the recipe names no network"),
    (lambda d: d["recipes"]["cnn4"].update(netwrok="cnn4"), "recipes.cnn4.netwrok: unknown key; allowed keys: network"),
    (lambda d: d["profiles"]["cpu"].update(budget={"model": {"width": 8}}),
     "profiles.cpu.budget.model: a profile's budget cannot set model options"),
    (lambda d: d["profiles"]["cpu"].update(budget={"recipe": {"network": "mlp"}}),
     "profiles.cpu.budget.recipe.network: a budget's recipe cannot set 'network'"),
    (lambda d: d["profiles"]["gpu"]["parts"].update(small=["mlp", "nope"]),
     "profiles.gpu.parts.small: no recipe 'nope'"),
    (lambda d: d["profiles"]["cpu"].update(train={"device": "tpu"}),
     "profiles.cpu.train.device: got 'tpu', allowed values: auto, cpu, cuda"),
]


def _recipe(d, arch="cnn4", **changes):
    d["recipes"].setdefault(arch, {}).update(changes)


BAD_COMBINATIONS = [
    (lambda d: _recipe(d, optimizer={"name": "adam", "lr": 0.001, "momentum": 0.9}),
     "recipes.cnn4.optimizer.momentum: only sgd takes momentum"),
    (lambda d: _recipe(d, scheduler={"name": "onecycle"}), "recipes.cnn4.scheduler.max_lr: onecycle needs max_lr"),
    (lambda d: _recipe(d, scheduler={"name": "cyclic", "max_lr": 0.0001}),
     "cyclic needs max_lr (its upper bound) above optimizer.lr"),
    (lambda d: _recipe(d, scheduler={"name": "multistep", "milestones": [5, 3]}),
     "recipes.cnn4.scheduler.milestones: multistep needs increasing epochs"),
    (lambda d: _recipe(d, swa={"enabled": True}), "recipes.cnn4.swa: SWA averages the weights up to the last epoch"),
    (lambda d: _recipe(d, precision="fp8"),
     "recipes.cnn4.precision: got 'fp8', allowed values: fp32, bf16, fp16, auto"),
    (lambda d: _recipe(d, augment={"zoom": 0.9}), "recipes.cnn4.augment.zoom: got 0.9, allowed range [0, 0.5]"),
    (lambda d: _recipe(d, label_smoothing=1.0), "recipes.cnn4.label_smoothing: got 1.0, allowed range [0, 1)"),
    (lambda d: _recipe(d, grad_clip=0), "recipes.cnn4.grad_clip: got 0"),
    (lambda d: _recipe(d, batch_size=80000), "recipes.cnn4.batch_size: 80000 is larger than its train_subset"),
]


# What needs the model registry: checked by fmnist.models.checks.check_params on the parsed params.
MODEL_CHECKS = [
    (lambda d: d["recipes"].update(vgg99={"network": "vgg99"}),
     "recipes.vgg99.network: unknown network 'vgg99'; registered networks: basic_cnn, cnn1, cnn3, cnn4"),
    (lambda d: d["recipes"]["mlp"]["model"].update(hiden=[3]), "recipes.mlp.model: unknown option 'hiden'"),
    (lambda d: d["recipes"]["mlp"]["model"].update(dropout=1.5), "recipes.mlp.model: options"),
    (lambda d: _recipe(d, finetune={"enabled": True}), "recipes.cnn4.finetune: 'cnn4' has no frozen backbone"),
    (lambda d: _recipe(d, "sk_knn", model={}, optimizer={"name": "sgd"}),
     "recipes.sk_knn.optimizer: 'sk_knn' is a scikit-learn baseline; only network, model and the budgets' run sizes"),
    (lambda d: _recipe(d, "sk_svc", model={"C": "big"}), "recipes.sk_svc.model: options"),
    (lambda d: _recipe(d, "resnet50_transfer", init="he"), "would overwrite the pretrained weights"),
    (lambda d: _recipe(d, "resnet50_transfer", finetune={"enabled": True, "stages": ["layer9"]}),
     "recipes.resnet50_transfer.finetune.stages: got ['layer9'], expected stages of 'resnet50_transfer'"),
    (lambda d: _recipe(d, "resnet50_transfer", scheduler={"name": "onecycle", "max_lr": 0.01}),
     "onecycle would raise the fine-tuning lr back to max_lr"),
    (lambda d: _recipe(d, "resnet50_transfer", early_stopping={"stop": True}),
     "early stopping could end the run in the frozen phase"),
    (lambda d: _recipe(d, "resnet50_transfer", budgets={"full": {"epochs": 1}}),
     "recipes.resnet50_transfer.epochs: fine-tuning needs at least 2 epochs"),
    (lambda d: _recipe(d, "shakeshake_resnet34", budgets={"full": {"epochs": 1, "model": {"width": 0}}}),
     "recipes.shakeshake_resnet34.model: options"),
]


@pytest.mark.parametrize("edit, message", BAD_VALUES + BAD_COMBINATIONS)
def test_bad_params_name_the_key_and_the_allowed_values(edit, message):
    """Bad values and invalid combinations of recipe options fail at start-up, naming the key."""
    data = repo_params()
    edit(data)
    with pytest.raises(ConfigError) as err:
        parse_params(data)
    assert message in str(err.value)


@pytest.mark.parametrize("edit, message", MODEL_CHECKS)
def test_params_the_models_cannot_take_fail_the_model_checks(edit, message):
    """Unknown architectures, model options and recipe keys the model's kind or family cannot take fail
    the registry checks (run before any work), naming the key."""
    data = repo_params()
    edit(data)
    params = parse_params(data)
    with pytest.raises(ConfigError) as err:
        check_params(params)
    assert message in str(err.value)




def test_bf16_on_a_cpu_without_native_bf16_fails_when_the_run_is_planned(monkeypatch):
    from fmnist.training import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    data = repo_params()
    data["train"].update(device="cpu")
    _recipe(data, precision="bf16")
    params = parse_params(data)
    check_params(params)
    with pytest.raises(DeviceError, match="recipes.cnn4.precision: precision bf16 needs native bf16 arithmetic"):
        plan_run(params.run_of("cnn4"))


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    data = apply_overrides(repo_params(), ["recipes.mlp.budgets.full.epochs=2", "profile=quick"])
    params = parse_params(data)
    assert params.recipe("mlp").epochs == 4 and params.experiment == "fmnist-quick"  # quick's own budget
    assert parse_params(data, "full").recipe("mlp").epochs == 2
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(repo_params()))
    with pytest.raises(ConfigError, match="recipes.mlp.budgets.full.epochs: got -1"):
        load_params(path, ["recipes.mlp.budgets.full.epochs=-1"])


def test_missing_or_broken_params_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("profile: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(broken)


def test_a_budget_recipe_overrides_the_recipe_for_its_profile_only():
    data = repo_params()
    data["recipes"]["mlp"]["budgets"]["cpu"] = {"epochs": 3, "recipe": {"optimizer": {"lr": 0.01},
                                                                          "scheduler": {"name": "step"}}}
    full, cpu = parse_params(data, "full").recipe("mlp"), parse_params(data, "cpu").recipe("mlp")
    assert (cpu.optimizer.name, cpu.optimizer.lr, cpu.scheduler.name, cpu.epochs) == ("sgd", 0.01, "step", 3)
    assert (full.optimizer.lr, full.scheduler.name, full.epochs) == (0.05, "plateau", 40)
    assert cpu.scheduler.factor == full.scheduler.factor == 0.5  # a nested section merges key by key


def test_a_profile_budget_recipe_reaches_every_recipe_under_their_own_budgets():
    data = repo_params()
    data["profiles"]["cpu"]["budget"] = {"epochs": 7, "recipe": {"optimizer": {"weight_decay": 0.125},
                                                                 "label_smoothing": 0.25}}
    data["recipes"]["mlp"]["budgets"]["cpu"]["recipe"] = {"label_smoothing": 0.5}
    cpu, full = parse_params(data, "cpu"), parse_params(data, "full")
    assert cpu.recipe("cnn1").optimizer.weight_decay == 0.125 and cpu.recipe("cnn1").label_smoothing == 0.25
    assert cpu.recipe("mlp").optimizer.weight_decay == 0.125 and cpu.recipe("mlp").label_smoothing == 0.5
    assert cpu.recipe("mlp").epochs == 40  # the recipe's own budget keeps its epochs over the profile's
    assert full.recipe("cnn1").label_smoothing != 0.25


def test_the_gpu_profile_is_one_overlay_on_the_networks_own_recipes():
    gpu, full = (load_params(ROOT / "params.yaml", [], profile=name) for name in ("gpu", "full"))
    resnet = gpu.recipe("resnet18")
    assert (resnet.network, resnet.model["dropout"]) == (full.recipe("resnet18").network, 0.25)
    assert (resnet.precision, resnet.channels_last, resnet.scheduler.name, resnet.swa.enabled) == (
        "auto", True, "onecycle", False)
    assert not gpu.train.deterministic and full.train.deterministic
    assert set(gpu.train_recipes) <= {name for part in gpu.parts.values() for name in part}


@pytest.mark.parametrize("override, message", [
    ({"optimizer": {"lr": -1}}, "recipes.cnn4.budgets.cpu.recipe.optimizer.lr: got -1"),
    ({"scheduler": {"name": "onecycle"}}, "recipes.cnn4.scheduler.max_lr: onecycle needs max_lr"),
    ({"model": {"x": 1}}, "recipes.cnn4.budgets.cpu.recipe.model: a budget's recipe cannot set 'model'"),
    ({"budgets": {"full": {"epochs": 2}}}, "recipes.cnn4.budgets.cpu.recipe.budgets: a budget's recipe cannot set"),
    ({"extends": "nope"}, "recipes.cnn4.budgets.cpu.recipe.extends: unknown base 'nope'"),
    ({"network": "cnn1"}, "recipes.cnn4.budgets.cpu.recipe.network: a budget's recipe cannot set 'network'"),
    ({"extends": "fast"}, "recipes.cnn4.budgets.cpu.recipe.model: a budget's recipe cannot set 'model', "
                          "directly or through a base it extends"),  # `fast` sets model and network
])
def test_a_bad_budget_recipe_names_its_key(override, message):
    data = repo_params()
    data["recipes"]["cnn4"]["budgets"]["cpu"] = {"recipe": override}
    with pytest.raises(ConfigError) as err:
        parse_params(data, "cpu")
    assert message in str(err.value)


def test_every_profile_is_checked_whichever_is_active():
    data = repo_params()
    data["recipes"]["mlp"]["budgets"]["cpu"]["recipe"] = {"scheduler": {"name": "onecycle"}}  # no max_lr
    with pytest.raises(ConfigError, match=r"recipes.mlp.scheduler.max_lr: onecycle needs max_lr .*as profile cpu"):
        parse_params(data, "full")
    data = repo_params()
    data["recipes"]["cnn4"]["budgets"]["quick"]["model"] = {"widht": 3}
    raw = parse_file(data)
    check_params(raw.resolve("full"))  # the active profile's recipes are fine
    with pytest.raises(ConfigError, match=r"recipes.cnn4.model: unknown option 'widht'.*\(in profile quick\)"):
        check_every_profile(raw)


def test_model_checks_see_the_merged_budget_recipe():
    data = repo_params()
    data["recipes"]["sk_svc"]["budgets"]["cpu"] = {"recipe": {"batch_size": 64}}
    check_params(parse_params(data, "full"))  # only cpu runs it
    with pytest.raises(ConfigError, match="recipes.sk_svc.batch_size: 'sk_svc' is a scikit-learn"):
        check_params(parse_params(data, "cpu"))
