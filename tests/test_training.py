import pytest
import torch

from fmnist.core.recipe import EarlyStoppingConfig, OptimizerConfig, RecipeConfig, SchedulerConfig
from fmnist.data.prepare import Arrays
from fmnist.data.tensors import DeviceDataset, Normalizer
from fmnist.models import create_model
from fmnist.training.loop import evaluate, fit
from fmnist.training.runtime import Runtime, seed_everything

from conftest import synthetic_images

CPU = torch.device("cpu")
TIMING = {"epoch_seconds", "cumulative_seconds", "test_seconds"}
NORMALIZE = Normalizer(0.2, 0.3)


def _replace(config, **changes):
    return config.model_copy(update=changes)


def datasets(n_train=200, n_val=60, n_test=80):
    x, y = synthetic_images(n_train + n_val + n_test, seed=1)
    parts = (slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None))
    train, val, test = (DeviceDataset.from_arrays(Arrays(x[s], y[s].astype("int64")), CPU) for s in parts)
    return train, val, test


def run(recipe, epochs, seed=0, arch="mlp", snapshots=None):
    """fit's result and the records passed to on_epoch; with `snapshots` (a list), also a copy of the
    model's weights as on_epoch saw them after each epoch."""
    seed_everything(seed, deterministic=True)
    model = create_model(arch, **recipe.model)
    train, val, test = datasets()
    records = []

    def on_epoch(record):
        records.append(record)
        if snapshots is not None:
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    result = fit(model, recipe, epochs, train, val, NORMALIZE, torch.Generator().manual_seed(seed),
                 test=test, on_epoch=on_epoch)
    return result, records


RECIPE = RecipeConfig(model={"hidden": [32]}, batch_size=32, optimizer=OptimizerConfig(name="adam", lr=1e-3))


def test_history_has_every_metric_per_epoch_and_learns():
    result, records = run(RECIPE, 4)
    assert [r.epoch for r in records] == [1, 2, 3, 4] and records == result.history
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", *TIMING):
        assert key in records[0].row()
    assert records[-1].cumulative_seconds >= records[0].epoch_seconds > 0 and records[0].test_seconds > 0
    assert records[-1].val_acc > 0.5 and records[-1].test_acc > 0.5
    # validation and test are scored on their own images (a loop that scored one set twice would tie them)
    assert any(r.val_acc != r.test_acc for r in records)


def test_same_seed_same_metrics_different_seed_different():
    strip = lambda h: [{k: v for k, v in r.row().items() if k not in TIMING} for r in h]
    cnn = _replace(RECIPE, model={})
    a, _ = run(cnn, 2, seed=1, arch="cnn4")
    b, _ = run(cnn, 2, seed=1, arch="cnn4")
    c, _ = run(cnn, 2, seed=2, arch="cnn4")
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)


def test_early_stopping_stops_or_runs_on_and_records_the_point():
    # lr 0 => no progress, so patience 2 triggers at epoch 3
    frozen = _replace(RECIPE, optimizer=OptimizerConfig(name="sgd", lr=1e-12),
                                 early_stopping=EarlyStoppingConfig(patience=2, min_delta=0.01, stop=True))
    stopped, _ = run(frozen, 6)
    assert stopped.stopped_early and stopped.epochs_run == 3 and stopped.early_stop_epoch == 3
    run_on = _replace(frozen, early_stopping=_replace(frozen.early_stopping, stop=False))
    full, _ = run(run_on, 6)
    assert not full.stopped_early and full.epochs_run == 6 and full.early_stop_epoch == 3


def test_best_state_is_the_best_validation_epoch():
    snapshots = []
    result, _ = run(RECIPE, 3, snapshots=snapshots)
    best = max(result.history, key=lambda r: r.val_acc)  # the first of equals, as the loop keeps
    assert result.best_epoch == best.epoch and result.best_state is not None
    # With seed 0 val acc peaks at epoch 2 and only ties it at epoch 3, so the weights kept must be
    # epoch 2's, not the last ones the model ended with.
    assert result.best_epoch < result.epochs_run == len(snapshots) == 3
    kept, last = snapshots[result.best_epoch - 1], snapshots[-1]
    assert result.best_state.keys() == kept.keys()
    for name, tensor in kept.items():
        assert torch.equal(result.best_state[name], tensor), name
    assert any(not torch.equal(result.best_state[name], last[name]) for name in last)
    # and the kept weights score what the history says the best epoch scored
    model = create_model("mlp", **RECIPE.model)
    model.load_state_dict(result.best_state)
    runtime = Runtime.for_recipe(RECIPE, torch.device("cpu"))  # as it was trained and scored
    val_loss, val_acc, _ = evaluate(model, datasets()[1], NORMALIZE, RECIPE.eval_batch_size, runtime)
    assert (val_loss, val_acc) == pytest.approx((best.val_loss, best.val_acc))


def test_plateau_schedule_reduces_lr_when_stuck():
    recipe = _replace(RECIPE, optimizer=OptimizerConfig(name="sgd", lr=1e-6),
                                 scheduler=SchedulerConfig(name="plateau", factor=0.5, patience=0),
                                 early_stopping=EarlyStoppingConfig(patience=10, stop=False))
    result, _ = run(recipe, 4)
    lr = 1e-6
    assert [r.lr for r in result.history] == pytest.approx([lr, lr, lr * 0.5, lr * 0.25])


def test_a_one_cycle_schedule_too_short_for_torch_is_one_line():
    from fmnist.core.errors import ConfigError
    from fmnist.core.recipe import SchedulerConfig
    from fmnist.training.optim import LrSchedule

    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.01)
    with pytest.raises(ConfigError, match="one-cycle schedule over 4 optimiser steps is too short"):
        LrSchedule(optimizer, SchedulerConfig(name="onecycle", max_lr=0.1, pct_start=0.25), 1, 4, "max")
    LrSchedule(optimizer, SchedulerConfig(name="onecycle", max_lr=0.1, pct_start=0.25), 2, 4, "max")  # 8 steps: fine
