"""A run stopped after any epoch and resumed from its saved state ends exactly like an uninterrupted
one on the CPU: same per-epoch metrics, same kept weights."""

import io

import pytest
import torch

from fmnist.core.recipe import (
    AugmentConfig,
    EarlyStoppingConfig,
    OptimizerConfig,
    RecipeConfig,
    SchedulerConfig,
    SwaConfig,
)
from fmnist.data.prepare import Arrays
from fmnist.data.tensors import DeviceDataset, Normalizer
from fmnist.models import create_model
from fmnist.training.loop import fit
from fmnist.training.resume import snapshot
from fmnist.training.runtime import seed_everything
from fmnist.training.steps import Diverged

from conftest import synthetic_images

CPU = torch.device("cpu")
TIMINGS = ("epoch_seconds", "cumulative_seconds", "test_seconds")


class Killed(Exception):
    pass


def data():
    x, y = synthetic_images(360, seed=3)
    split = lambda a, b: DeviceDataset.from_arrays(Arrays(x[a:b], y[a:b].astype("int64")), CPU)  # noqa: E731
    return split(0, 240), split(240, 300), split(300, 360)


def train(recipe, epochs, arch, resume=None, kill_after=None, saved=None, std=80.0):
    seed_everything(0, True)
    model = create_model(arch, **({"hidden": [32]} if arch == "mlp" else {}))
    train_set, val, test = data()

    def on_state(fitter):
        buffer = io.BytesIO()
        torch.save(snapshot(fitter.state_dict()), buffer)  # copied, then through bytes, as the state file is
        saved.append(buffer.getvalue())
        if kill_after is not None and fitter.next_epoch > kill_after:
            raise Killed

    state = torch.load(io.BytesIO(resume), weights_only=False) if resume is not None else None
    return fit(model, recipe, epochs, train_set, val, Normalizer(100.0, std), torch.Generator().manual_seed(0),
               test=test, resume=state, on_state=on_state if saved is not None else None)


RECIPES = {
    "augment+onecycle": ("cnn1", RecipeConfig(batch_size=48, optimizer=OptimizerConfig(name="adamw", lr=1e-3),
                                              scheduler=SchedulerConfig(name="onecycle", max_lr=1e-2),
                                              augment=AugmentConfig(hflip=0.5, translate=2, erasing=0.5),
                                              early_stopping=EarlyStoppingConfig(patience=3, stop=True))),
    "plateau+swa": ("mlp", RecipeConfig(batch_size=32, optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9),
                                        scheduler=SchedulerConfig(name="plateau", patience=0),
                                        swa=SwaConfig(enabled=True, start=0.5, lr=0.01),
                                        early_stopping=EarlyStoppingConfig(stop=False))),
}


@pytest.mark.parametrize("name, kill_after", [("augment+onecycle", 2), ("plateau+swa", 2), ("plateau+swa", 3)])
def test_resumed_run_equals_the_uninterrupted_one(name, kill_after):
    """Killed after epoch 2, or (SWA from epoch 3) after the averaging began."""
    arch, recipe = RECIPES[name]
    straight = train(recipe, 4, arch)
    saved: list[bytes] = []
    with pytest.raises(Killed):
        train(recipe, 4, arch, kill_after=kill_after, saved=saved)
    resumed = train(recipe, 4, arch, resume=saved[-1], saved=[])
    strip = lambda h: [{k: v for k, v in r.row().items() if k not in TIMINGS} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    assert resumed.best_epoch == straight.best_epoch
    scores = lambda swa: {k: v for k, v in (swa or {}).items() if "seconds" not in k}  # noqa: E731
    assert scores(resumed.swa) == scores(straight.swa)
    for key, tensor in straight.best_state.items():
        assert torch.equal(resumed.best_state[key], tensor), key


def test_a_nan_loss_stops_with_the_epoch_and_batch():
    recipe = RecipeConfig(batch_size=32, optimizer=OptimizerConfig(name="sgd", lr=0.01))
    with pytest.raises(Diverged, match=r"diverged: the loss became NaN or infinite in epoch 1, batch 1; "):
        train(recipe, 3, "mlp", std=0.0)  # a zero std makes every input infinite
