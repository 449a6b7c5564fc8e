"""One trainer interface, two implementations: a torch network and a scikit-learn estimator.

`trainer_for` is the only place that looks at a model's kind; everything else asks the trainer
(which device, which runtime, which options are logged, how to fit, how to rebuild the classifier).
"""

from __future__ import annotations

import dataclasses
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from fmnist.core.recipe import Recipe, RecipeConfig
from fmnist.core.runs import EpochRecord, RunSummary, summarise, with_average
from fmnist.data.prepare import Arrays
from fmnist.models import ModelInfo, ModelKind, create_model, model_info
from fmnist.models.checks import NETWORK_ONLY_FIELDS
from fmnist.models.wrapper import EstimatorClassifier, NormalizedClassifier
from fmnist.training.devices import resolve_device
from fmnist.training.runtime import Runtime

if TYPE_CHECKING:
    from fmnist.training.plan import RunPlan


class RunLog(Protocol):
    """Where a trainer reports while it fits (the active MLflow run, in the pipeline)."""

    def params(self, flat: dict[str, Any]) -> None: ...
    def epoch(self, record: EpochRecord) -> None: ...
    def artifact(self, path: Path, artifact_dir: str) -> None: ...


@dataclass(frozen=True)
class FitData:
    train: Arrays
    val: Arrays
    test: Arrays
    class_names: list[str]
    mean: float
    std: float
    test_each_epoch: bool = True  # score the test images every epoch (the epoch-vs-time table)

    @property
    def epoch_test(self) -> Arrays | None:
        return self.test if self.test_each_epoch else None


@dataclass
class Resumable:
    """A saved state to continue from (or None), and where to save the state after every epoch."""

    state: dict | None
    # (fitter state, extra state): both hold live tensors, so a save that outlives the call copies them first
    save: Callable[[dict, dict], None]


@dataclass
class Trained:
    """What either kind hands back to the shared bookkeeping."""

    history: list[EpochRecord]
    summary: RunSummary
    classifier: nn.Module  # pixels in [0, 1] -> scores, for MLflow and serving
    checkpoint: dict  # save_checkpoint keyword arguments beyond the common ones
    requirements: list[str] = field(default_factory=list)  # pip pins the logged model needs beyond torch


class Trainer(ABC):
    kind: ModelKind
    unlogged_fields: tuple[str, ...] = ()  # recipe fields that do not apply to this kind

    def device(self, requested: str) -> torch.device:
        return resolve_device(requested)

    def runtime(self, recipe: RecipeConfig, device: torch.device) -> Runtime | None:
        return Runtime.for_recipe(recipe, device)

    def model_options(self, info: ModelInfo, options: dict[str, Any], seed: int) -> dict[str, Any]:
        return dict(options)

    def epochs(self, recipe: Recipe) -> int:
        return recipe.epochs

    @abstractmethod
    def fit(self, plan: RunPlan, data: FitData, log: RunLog, model_dir: Path,
            resumable: Resumable | None = None) -> Trained: ...

    @abstractmethod
    def classifier(self, ckpt: dict) -> nn.Module:
        """The classifier a checkpoint written after `fit` holds, in eval mode."""


class NetworkTrainer(Trainer):
    kind = ModelKind.TORCH

    def fit(self, plan: RunPlan, data: FitData, log: RunLog, model_dir: Path,
            resumable: Resumable | None = None) -> Trained:
        from fmnist.data.tensors import DeviceDataset, Normalizer
        from fmnist.models.init import init_weights
        from fmnist.training.loop import fit
        from fmnist.training.probes import UnitWeightRecorder, first_pixel_layer
        from fmnist.training.progress import Progress

        recipe, device = plan.recipe, plan.device
        net = create_model(plan.info.name, num_classes=len(data.class_names), **plan.model_options)
        init_weights(net, recipe.init)
        net.to(device)
        # Models with their own input normalisation (ImageNet's, for transfer) take pixels in [0, 1].
        mean, std = (data.mean, data.std) if plan.info.input == "standardized" else (0.0, 1.0)
        normalize = Normalizer(mean, std)
        on_device = {name: DeviceDataset.from_arrays(a, device) if a is not None else None
                     for name, a in (("train", data.train), ("val", data.val), ("test", data.epoch_test))}
        # On the training device: shuffling and augmentation draw their random numbers where the data is.
        generator = torch.Generator(device=device).manual_seed(plan.seed)
        num_params = sum(p.numel() for p in net.parameters())
        log.params({"num_params": num_params})
        layer = first_pixel_layer(net)
        recorder = UnitWeightRecorder(layer) if layer is not None else None
        resume = resumable.state if resumable is not None else None
        if resume is not None and recorder is not None and "recorder" in resume["extra"]:
            recorder.restore(resume["extra"]["recorder"])

        def on_state(fitter) -> None:
            if recorder is not None:  # before saving, so the saved state holds this epoch's snapshot
                recorder(fitter.result.history[-1])
            if resumable is not None:
                resumable.save(fitter.state_dict(), {"recorder": recorder.state()} if recorder is not None else {})

        def on_epoch(record: EpochRecord) -> None:
            log.epoch(record)

        result = fit(net, recipe, plan.recipe.epochs, on_device["train"], on_device["val"], normalize, generator,
                     test=on_device["test"], on_epoch=on_epoch, runtime=plan.runtime,
                     resume=resume["fitter"] if resume is not None else None, on_state=on_state,
                     progress=Progress(plan.arch, plan.recipe.epochs, -(-len(data.train) // recipe.batch_size),
                                       recipe.batch_size))
        if recorder is not None:
            log.artifact(recorder.save(model_dir / "unit_weights.npz"), "probes")
        net.load_state_dict(result.best_state)
        net = net.cpu().eval().to(memory_format=torch.contiguous_format)
        classifier = NormalizedClassifier(net, mean, std, data.class_names, tta_flip=recipe.tta_flip)
        summary = summarise(plan.arch, self.kind.value, num_params, result.history, result.best_epoch,
                            result.early_stop_epoch, result.stopped_early)
        if result.swa is not None:
            summary = with_average(summary, result.swa)
        return Trained(result.history, summary, classifier,
                       {"state_dict": net.state_dict(), "mean": mean, "std": std, "tta_flip": recipe.tta_flip})

    def classifier(self, ckpt: dict) -> nn.Module:
        options = dict(ckpt["model_kwargs"])
        info = checkpoint_network(ckpt)
        if "pretrained" in info.options:
            options["pretrained"] = False  # the checkpoint holds every weight: never fetch ImageNet's
        net = create_model(info.name, num_classes=ckpt["num_classes"], **options)
        net.load_state_dict(ckpt["state_dict"])
        return NormalizedClassifier(net, ckpt["mean"], ckpt["std"], ckpt["class_names"],
                                    ckpt.get("tta_flip", False)).eval()


class EstimatorTrainer(Trainer):
    kind = ModelKind.SKLEARN
    # A baseline logs only what applies to it (the stopping rule stays: the report restates it).
    unlogged_fields = tuple(f for f in NETWORK_ONLY_FIELDS if f != "early_stopping")

    def device(self, requested: str) -> torch.device:
        return torch.device("cpu")  # scikit-learn fits on the CPU whatever train.device says

    def runtime(self, recipe: RecipeConfig, device: torch.device) -> Runtime | None:
        return None

    def model_options(self, info: ModelInfo, options: dict[str, Any], seed: int) -> dict[str, Any]:
        """A baseline's seed is the run's, unless the recipe sets one."""
        options = dict(options)
        if "random_state" in info.options:
            options.setdefault("random_state", seed)
        return options

    def epochs(self, recipe: Recipe) -> int:
        return 1  # one fit

    def fit(self, plan: RunPlan, data: FitData, log: RunLog, model_dir: Path,
            resumable: Resumable | None = None) -> Trained:
        """One fit: nothing to resume (an interrupted fit starts again)."""
        import sklearn

        from fmnist.models.baselines import learned_numbers
        from fmnist.training.baseline import fit_baseline

        estimator = create_model(plan.info.name, num_classes=len(data.class_names), **plan.model_options)
        print(f"{plan.arch}: fitting {type(estimator).__name__} on {len(data.train):,} images (one fit, no progress "
              "to show until it ends)", file=sys.stderr, flush=True)
        result = fit_baseline(estimator, data.train, data.val, data.epoch_test, plan.seed)
        print(f"{plan.arch}: fitted in {result.fit_seconds:.1f} s, val acc {result.history[0].val_acc:.4f}",
              file=sys.stderr, flush=True)
        for record in result.history:
            log.epoch(record)
        summary = dataclasses.replace(
            summarise(plan.arch, self.kind.value, learned_numbers(estimator), result.history, best_epoch=1,
                      selected="fit", converged=True),
            extra={"fit_seconds": result.fit_seconds})
        return Trained(result.history, summary, EstimatorClassifier(estimator, data.class_names),
                       {"estimator": estimator}, [f"scikit-learn=={sklearn.__version__}"])

    def classifier(self, ckpt: dict) -> nn.Module:
        return EstimatorClassifier(ckpt["estimator"], ckpt["class_names"]).eval()


TRAINERS: dict[ModelKind, Callable[[], Trainer]] = {ModelKind.TORCH: NetworkTrainer,
                                                    ModelKind.SKLEARN: EstimatorTrainer}


def trainer_for(info: ModelInfo) -> Trainer:
    return TRAINERS[info.kind]()


# Recipes that were registered as networks before recipes named theirs: what their old checkpoints hold.
NETWORK_OF_OLD_RECIPE = {"fast92": "fastcnn", "fast93": "fastcnn", "fast94": "fastcnn"}


def checkpoint_network(ckpt: dict) -> ModelInfo:
    """The registered network a checkpoint holds (a checkpoint written before recipes named their network
    gives its recipe's name, which was then the network's)."""
    return model_info(ckpt.get("network") or NETWORK_OF_OLD_RECIPE.get(ckpt["arch"], ckpt["arch"]))
