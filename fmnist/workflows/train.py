"""Train one architecture: data to the device, fit, track every epoch, write the stage's outputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch

from fmnist import tracking
from fmnist.checkpoint import save_checkpoint
from fmnist.config import Params, to_flat_dict
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.data.tensors import DeviceDataset, Normalizer
from fmnist.io import atomic_write_text, dict_csv_text, file_sha256, read_json, write_json
from fmnist.models import create_model, init_weights
from fmnist.models.wrapper import NormalizedClassifier, pixels_to_input
from fmnist.reporting.tables import HISTORY_COLUMNS
from fmnist.training.loop import fit, resolve_device, seed_everything
from fmnist.training.probes import UnitWeightRecorder, first_pixel_layer


@dataclass(frozen=True)
class TrainPaths:
    split_dir: Path  # train.npz, val.npz
    prepared_dir: Path  # test.npz, stats.json
    model_dir: Path  # model.pt, run.json
    metrics_file: Path  # summary metrics (dvc metrics)
    history_file: Path  # per-epoch CSV (dvc plots)


def history_csv(history: list[dict]) -> str:
    return dict_csv_text(history, [c for c in HISTORY_COLUMNS if any(c in row for row in history)])


def recipe_params(params: Params, arch: str, device: torch.device, sizes: dict[str, int], num_params: int) -> dict:
    recipe = params.recipe(arch)
    budget = recipe.budget(params.profile)
    flat = {f"recipe.{k}": v for k, v in to_flat_dict(recipe).items() if not k.startswith(("full.", "quick."))}
    flat.update({"arch": arch, "profile": params.profile, "epochs": budget.epochs,
                 "train_subset": budget.train_subset, "seed": params.train.seed,
                 "deterministic": params.train.deterministic, "device": str(device),
                 "num_params": num_params, **{f"n_{k}": v for k, v in sizes.items()}})
    return flat


def stop_rule(recipe) -> dict:
    """The early-stopping rule the report restates (whether training actually stops is not part of it)."""
    rule = dataclasses.asdict(recipe.early_stopping)
    rule.pop("stop")
    return rule


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_architecture(params: Params, arch: str, paths: TrainPaths, root: Path = Path(".")) -> dict:
    recipe = params.recipe(arch)  # fails fast on an unknown architecture
    budget = recipe.budget(params.profile)
    device = resolve_device(params.train.device)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    seed_everything(params.train.seed, params.train.deterministic)

    input_files = {"train": paths.split_dir / "train.npz", "val": paths.split_dir / "val.npz",
                   "test": paths.prepared_dir / "test.npz"}
    arrays = {name: load_arrays(path) for name, path in input_files.items()}
    arrays["train"] = stratified_subset(arrays["train"], budget.train_subset, params.train.seed)
    stats = read_json(paths.prepared_dir / "stats.json")
    num_classes = len(stats["classes"])

    net = create_model(arch, num_classes=num_classes, **recipe.model)
    init_weights(net, recipe.init)
    net.to(device)
    normalize = Normalizer(stats["mean"], stats["std"])
    on_device = {name: DeviceDataset.from_arrays(a, device) for name, a in arrays.items()}
    # On the training device: shuffling and augmentation draw their random numbers where the data is.
    generator = torch.Generator(device=device).manual_seed(params.train.seed)

    tags = tracking.base_tags(f"train@{arch}", {k: file_sha256(p) for k, p in input_files.items()}, root)
    tags.update(tracking.environment_tags(str(device)))
    tags.update({"arch": arch, "profile": params.profile})
    with tracking.tracked_run(params.experiment, run_name=arch, tags=tags, root=root) as run:
        sizes = {name: len(a) for name, a in arrays.items()}
        num_params = count_parameters(net)
        tracking.log_params(recipe_params(params, arch, device, sizes, num_params))
        layer = first_pixel_layer(net)
        recorder = UnitWeightRecorder(layer) if layer is not None else None

        def on_epoch(record: dict) -> None:
            tracking.log_epoch(record)
            if recorder is not None:
                recorder(record)

        result = fit(net, recipe, budget.epochs, on_device["train"], on_device["val"], normalize, generator,
                     test=on_device["test"] if params.train.log_test_each_epoch else None, on_epoch=on_epoch)
        if recorder is not None:
            mlflow.log_artifact(str(recorder.save(paths.model_dir / "unit_weights.npz")), "probes")
        net.load_state_dict(result.best_state)
        summary = _summary(arch, result, num_params)
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        save_checkpoint(paths.model_dir / "model.pt", arch=arch, model_kwargs=recipe.model,
                        num_classes=num_classes, state_dict=net.cpu().state_dict(), mean=stats["mean"],
                        std=stats["std"], class_names=stats["classes"], run_id=run.info.run_id)
        classifier = NormalizedClassifier(net.cpu().eval(), stats["mean"], stats["std"], stats["classes"])
        example = pixels_to_input(arrays["val"].x[:4]).numpy()
        tracking.log_classifier(classifier, example)
        history = history_csv(result.history)
        atomic_write_text(paths.history_file, history)
        mlflow.log_text(history, "history.csv")
        write_json(paths.metrics_file, summary)
        write_json(paths.model_dir / "run.json", {"run_id": run.info.run_id, "experiment": params.experiment,
                                                  "arch": arch, "tracking_uri": mlflow.get_tracking_uri(),
                                                  "early_stopping": stop_rule(recipe)})
    return summary


def _summary(arch: str, result, num_params: int) -> dict:
    best = result.history[result.best_epoch - 1]
    return {
        "arch": arch,
        "num_params": num_params,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "early_stop_epoch": result.early_stop_epoch,
        "stopped_early": result.stopped_early,
        "best_val_acc": best["val_acc"],
        "best_val_loss": best["val_loss"],
        "train_seconds": result.history[-1]["cumulative_seconds"],
        "seconds_to_best": best["cumulative_seconds"],
    }
