"""Train one architecture: data to the device, fit, track every epoch, write the stage's outputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch

from fmnist import tracking
from fmnist.checkpoint import save_checkpoint
from fmnist.config import TORCH_ONLY_FIELDS, Params, to_flat_dict
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.data.tensors import DeviceDataset, Normalizer
from fmnist.io import atomic_write_text, dict_csv_text, file_sha256, read_json, write_json
from fmnist.models import create_model, init_weights, model_info
from fmnist.models.baselines import learned_numbers
from fmnist.models.wrapper import EstimatorClassifier, NormalizedClassifier, pixels_to_input
from fmnist.reporting.tables import HISTORY_COLUMNS, time_to_accuracy
from fmnist.training.baseline import fit_baseline
from fmnist.devices import resolve_device
from fmnist.training.loop import Runtime, fit, seed_everything
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
    sklearn = model_info(arch).kind == "sklearn"
    # A baseline logs only what applies to it (the stopping rule stays: the report restates it).
    skipped = ("full", "quick", "model", *(f for f in TORCH_ONLY_FIELDS if f != "early_stopping" and sklearn))
    flat = {f"recipe.{k}": v for k, v in to_flat_dict(recipe).items() if k.split(".")[0] not in skipped}
    # the options the model was built with: the recipe's, with this budget's overrides
    options = model_options(params, arch)
    flat.update({f"recipe.model.{k}": v for k, v in to_flat_dict(options).items() if k})
    flat.update({"arch": arch, "kind": model_info(arch).kind, "profile": params.profile,
                 "epochs": 1 if sklearn else budget.epochs, "train_subset": budget.train_subset,
                 "eval_subset": budget.eval_subset,
                 "seed": params.train.seed, "deterministic": params.train.deterministic, "device": str(device),
                 "num_params": num_params, **{f"n_{k}": v for k, v in sizes.items()}})
    return flat


def model_options(params: Params, arch: str) -> dict:
    """The builder's options as run: the recipe's, this budget's overrides, and a baseline's seed."""
    options = params.recipe(arch).model_options(params.profile)
    if model_info(arch).kind == "sklearn" and "random_state" in model_info(arch).options:
        options.setdefault("random_state", params.train.seed)
    return options


def stop_rule(recipe) -> dict:
    """The early-stopping rule the report restates (whether training actually stops is not part of it)."""
    rule = dataclasses.asdict(recipe.early_stopping)
    rule.pop("stop")
    return rule


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Trained:
    """What either kind of model hands back to the shared bookkeeping."""

    history: list[dict]
    summary: dict
    classifier: torch.nn.Module  # pixels in [0, 1] -> scores, for MLflow and serving
    checkpoint: dict  # save_checkpoint keyword arguments beyond the common ones


def train_architecture(params: Params, arch: str, paths: TrainPaths, root: Path = Path(".")) -> dict:
    recipe = params.recipe(arch)  # fails fast on an unknown architecture
    info = model_info(arch)
    budget = recipe.budget(params.profile)
    device = resolve_device(params.train.device) if info.kind == "torch" else torch.device("cpu")
    runtime = Runtime.for_recipe(recipe, device) if info.kind == "torch" else None  # bad precision fails here
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    seed_everything(params.train.seed, params.train.deterministic)

    input_files = {"train": paths.split_dir / "train.npz", "val": paths.split_dir / "val.npz",
                   "test": paths.prepared_dir / "test.npz"}
    arrays = {name: load_arrays(path) for name, path in input_files.items()}
    arrays["train"] = stratified_subset(arrays["train"], budget.train_subset, params.train.seed)
    for name in ("val", "test"):
        arrays[name] = stratified_subset(arrays[name], budget.eval_subset, params.train.seed)
    stats = read_json(paths.prepared_dir / "stats.json")

    tags = tracking.base_tags(f"train@{arch}", {k: file_sha256(p) for k, p in input_files.items()}, root)
    tags.update(tracking.environment_tags(str(device)))
    tags.update({"arch": arch, "profile": params.profile, "kind": info.kind})
    with tracking.tracked_run(params.experiment, run_name=arch, tags=tags, root=root) as run:
        sizes = {name: len(a) for name, a in arrays.items()}
        if info.kind == "sklearn":
            trained = _fit_estimator(params, arch, arrays, stats, sizes, device)
        else:
            trained = _fit_network(params, arch, arrays, stats, sizes, device, runtime, paths)
        summary = trained.summary
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        save_checkpoint(paths.model_dir / "model.pt", arch=arch, model_kwargs=model_options(params, arch),
                        num_classes=len(stats["classes"]), class_names=stats["classes"], run_id=run.info.run_id,
                        **trained.checkpoint)
        example = pixels_to_input(arrays["val"].x[:4]).numpy()
        tracking.log_classifier(trained.classifier, example)
        history = history_csv(trained.history)
        atomic_write_text(paths.history_file, history)
        mlflow.log_text(history, "history.csv")
        write_json(paths.metrics_file, summary)
        write_json(paths.model_dir / "run.json", {"run_id": run.info.run_id, "experiment": params.experiment,
                                                  "arch": arch, "tracking_uri": mlflow.get_tracking_uri(),
                                                  "early_stopping": stop_rule(recipe),
                                                  # evaluate scores the same test images
                                                  "test_subset": {"size": budget.eval_subset,
                                                                  "seed": params.train.seed}})
    return summary


def _fit_network(params: Params, arch: str, arrays: dict, stats: dict, sizes: dict, device: torch.device,
                 runtime: Runtime, paths: TrainPaths) -> Trained:
    recipe = params.recipe(arch)
    budget = recipe.budget(params.profile)
    net = create_model(arch, num_classes=len(stats["classes"]), **model_options(params, arch))
    init_weights(net, recipe.init)
    net.to(device)
    # Models with their own input normalisation (ImageNet's, for transfer) take pixels in [0, 1].
    mean, std = (stats["mean"], stats["std"]) if model_info(arch).input == "standardized" else (0.0, 1.0)
    normalize = Normalizer(mean, std)
    on_device = {name: DeviceDataset.from_arrays(a, device) for name, a in arrays.items()}
    # On the training device: shuffling and augmentation draw their random numbers where the data is.
    generator = torch.Generator(device=device).manual_seed(params.train.seed)
    num_params = count_parameters(net)
    tracking.log_params({**recipe_params(params, arch, device, sizes, num_params),
                         "precision_used": "bf16" if runtime.amp_dtype == torch.bfloat16 else "fp32"})
    layer = first_pixel_layer(net)
    recorder = UnitWeightRecorder(layer) if layer is not None else None

    def on_epoch(record: dict) -> None:
        tracking.log_epoch(record)
        if recorder is not None:
            recorder(record)

    result = fit(net, recipe, budget.epochs, on_device["train"], on_device["val"], normalize, generator,
                 test=on_device["test"] if params.train.log_test_each_epoch else None, on_epoch=on_epoch,
                 runtime=runtime)
    if recorder is not None:
        mlflow.log_artifact(str(recorder.save(paths.model_dir / "unit_weights.npz")), "probes")
    net.load_state_dict(result.best_state)
    net = net.cpu().eval().to(memory_format=torch.contiguous_format)
    classifier = NormalizedClassifier(net, mean, std, stats["classes"], tta_flip=recipe.tta_flip)
    return Trained(result.history, network_summary(arch, result, num_params), classifier,
                   {"state_dict": net.state_dict(), "mean": mean, "std": std, "tta_flip": recipe.tta_flip})


def _fit_estimator(params: Params, arch: str, arrays: dict, stats: dict, sizes: dict,
                   device: torch.device) -> Trained:
    estimator = create_model(arch, num_classes=len(stats["classes"]), **model_options(params, arch))
    logged = recipe_params(params, arch, device, sizes, 0)
    logged.pop("num_params")  # known only after the fit: logged as a metric with the summary
    tracking.log_params(logged)
    test = arrays["test"] if params.train.log_test_each_epoch else None
    result = fit_baseline(estimator, arrays["train"], arrays["val"], test, params.train.seed)
    for record in result.history:
        tracking.log_epoch(record)
    summary = run_summary(arch, "sklearn", learned_numbers(estimator), result.history, best_epoch=1,
                          selected="fit")
    summary["fit_seconds"] = result.fit_seconds
    classifier = EstimatorClassifier(estimator, stats["classes"])
    return Trained(result.history, summary, classifier, {"estimator": estimator})


def run_summary(arch: str, kind: str, num_params: int, history: list[dict], best_epoch: int,
                early_stop_epoch: int | None = None, stopped_early: bool = False, selected: str = "best_epoch") -> dict:
    """The figures every run reports (metrics JSON for DVC, metrics in MLflow), from its history."""
    best = history[best_epoch - 1]
    return {
        "arch": arch,
        "kind": kind,
        "num_params": num_params,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "early_stop_epoch": early_stop_epoch,
        "stopped_early": stopped_early,
        "selected": selected,
        "best_val_acc": best["val_acc"],
        "best_val_loss": best.get("val_loss"),  # an SVC has none
        "train_seconds": history[-1]["cumulative_seconds"],
        "seconds_to_best": best["cumulative_seconds"],
        **time_to_accuracy(history),
    }


def network_summary(arch: str, result, num_params: int) -> dict:
    """The run's figures for the model kept: the best-validation epoch, or the SWA average."""
    summary = run_summary(arch, "torch", num_params, result.history, result.best_epoch, result.early_stop_epoch,
                          result.stopped_early)
    if result.swa is not None:
        summary.update(result.swa)
        summary.update({"selected": "swa", "best_epoch": result.epochs_run, "best_val_acc": result.swa["swa_val_acc"],
                        "best_val_loss": result.swa["swa_val_loss"],
                        "train_seconds": summary["train_seconds"] + result.swa["swa_bn_seconds"],
                        "seconds_to_best": summary["train_seconds"] + result.swa["swa_bn_seconds"]})
    return summary
