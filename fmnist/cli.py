"""The `fmnist` command: small tools over the same library the pipeline uses."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from fmnist import records_cli as record_commands
from fmnist import sweep_cli as sweep_commands
from fmnist.ci import commands as ci_commands
from fmnist.core.config import ConfigError, ReportConfig, load_file, load_params
from fmnist.core.entry import run_main, split_overrides
from fmnist.models.checks import check_every_profile, check_params
from fmnist.params_edit import set_profile


def _env_with_this_python() -> dict[str, str]:
    """Stages run `python ...`: make that this interpreter (the project's venv), whatever PATH says."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def run_pipeline(profile: str, params_file: Path) -> int:
    """Set the profile in params.yaml (so params, dvc.lock and outputs agree), then `dvc repro`.
    Every recipe is checked against its network before any stage runs."""
    set_profile(params_file, profile, check_every_profile)
    return subprocess.call([sys.executable, "-m", "dvc", "repro"], env=_env_with_this_python())


def train_and_evaluate(arch: str, overrides: list[str], params_file: Path, resume: bool = True) -> int:
    """One recipe outside DVC, with overrides: its train then evaluate workflow, in this process."""
    from fmnist.workflows.evaluate import EvalPaths, evaluate_architecture
    from fmnist.workflows.train import TrainPaths, train_architecture

    params = load_params(params_file, overrides)
    run = params.run_of(arch)
    summary = train_architecture(run, TrainPaths.for_arch(arch), resume=None if resume else False)
    print(summary.describe())
    evaluation = evaluate_architecture(arch, run.train, params.evaluate, EvalPaths.for_arch(arch))
    print(evaluation.describe(arch))
    return 0


def tables_experiment(experiment: str | None, params_file: Path) -> tuple[str, str]:
    """The experiment `fmnist tables` reads, and where that name came from: --experiment, else the
    experiment of params.yaml's profile (the one `dvc repro` and `fmnist predict` use)."""
    if experiment:
        return experiment, "--experiment"
    if not params_file.is_file():
        raise ConfigError(f"{params_file}: not found, so the profile's experiment is unknown; run from the project "
                          "root, or pass --experiment NAME (e.g. fmnist-cpu) to read MLflow alone")
    params = load_params(params_file)
    return params.experiment, f"the {params.profile} profile in {params_file}"


def print_tables(tracking_uri: str | None, experiment: str | None, run_id: str | None, fmt: str,
                 params_file: Path = Path("params.yaml")) -> None:
    """Rebuild the report's tables from MLflow alone: no DVC outputs, no torch."""
    import json

    import mlflow
    from mlflow import MlflowClient

    from fmnist import tracking
    from fmnist.core.errors import StoreError
    from fmnist.reporting.notes import run_notes
    from fmnist.reporting.render import epoch_table_blocks, leaderboard_blocks, to_markdown
    from fmnist.reporting.sources import find_report_run, from_mlflow, from_training_runs, latest_training_runs
    from fmnist.reporting.tables import build_tables

    tracking.configure(uri=tracking_uri, must_exist=True)  # read-only: never create an empty database
    client = MlflowClient()
    experiment, source = tables_experiment(experiment, params_file)
    try:
        report_run = find_report_run(client, experiment, run_id)
        inputs = from_mlflow(client, report_run)
        said = f"Tables of report run {report_run.info.run_id}"
    except StoreError as err:
        if run_id or "no finished report run" not in str(err):
            raise (err if source == "--experiment" else
                   StoreError(f"{err} (the experiment of {source}; --experiment NAME reads another)")) from None
        # Runs trained elsewhere and imported have no report run: the latest training run of each recipe.
        inputs = from_training_runs(client, latest_training_runs(client, experiment),
                                    (load_params(params_file).report if params_file.is_file() else ReportConfig())
                                    .diminishing_returns_tolerance)
        said = "No report run: tables of the latest finished, evaluated training run of each recipe"
    tables, notes = build_tables(inputs), run_notes(inputs)
    said += f" in experiment '{experiment}' (from {source}), {mlflow.get_tracking_uri()}"
    if fmt == "json":
        print(said, file=sys.stderr)  # stdout stays one JSON document
        print(json.dumps(tables.to_dict(), indent=2, sort_keys=True))
    else:
        print(said + "\n")
        print(to_markdown([*leaderboard_blocks(tables, notes), *epoch_table_blocks(tables, notes=notes)], Path(".")))


def show_experiments(saved: Path | None, all_columns: bool) -> str:
    """`dvc exp show --json` (or a saved copy of its output) as one readable Markdown table."""
    import json

    from fmnist.core.errors import FmnistError
    from fmnist.reporting.experiments import exps_markdown

    if saved is not None:
        if not saved.is_file():
            raise FmnistError(f"{saved}: no such file; save one with `dvc exp show --json > {saved}`")
        text = saved.read_text()
    else:
        done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True,
                              text=True, env=_env_with_this_python())
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise FmnistError(f"`dvc exp show --json` failed (exit {done.returncode}): {last}")
        text = done.stdout
    try:
        show = json.loads(text)
    except json.JSONDecodeError as err:
        raise FmnistError(f"{saved or 'dvc exp show --json'}: not JSON ({err}); save it with "
                          "`dvc exp show --json > FILE`") from None
    if not isinstance(show, list):
        raise FmnistError(f"{saved or 'dvc exp show --json'}: expected the list `dvc exp show --json` prints, got "
                          f"a JSON {type(show).__name__}; save it with `dvc exp show --json > FILE`")
    return exps_markdown(show, all_columns)


def show_recipe(name: str, profile: str | None, params_file: Path) -> str:
    """A recipe as a profile runs it (every layer merged), as YAML: what `--cfg job` prints in Hydra."""
    import yaml

    params = load_params(params_file, profile=profile)
    check_params(params, [name])
    recipe = params.recipe(name).model_dump(mode="json")
    head = (f"# recipes.{name} as profile '{params.profile}' runs it (experiment {params.experiment}); "
            f"every layer of {params_file} merged\n")
    return head + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=110)


def list_profiles(params_file: Path) -> str:
    raw = load_file(params_file)
    rows = [f"{'*' if name == raw.profile else ' '} {name:<8} {p.experiment:<16} {p.about}"
            for name, p in raw.profiles.items()]
    return "\n".join(["  profile  experiment       what it is for (* = active)", *rows])


def list_stale_runs(close: bool) -> int:
    """Runs whose process is gone but which still say RUNNING: listed, or closed as KILLED."""
    from mlflow import MlflowClient

    from fmnist import tracking
    from fmnist.tracking.stale import close_run, gone_reason, stale_runs

    tracking.configure(must_exist=True)
    client = MlflowClient()
    runs = stale_runs(client)
    for run in runs:
        reason = gone_reason(run)
        if close:
            close_run(client, run, reason + "; closed by `fmnist runs --close`")
        print(f"{run.info.run_id} {run.info.run_name or ''}: {reason}{' -> KILLED' if close else ''}")
    if not runs:
        print("no stale runs: every RUNNING run on this host has a live process")
    return 0


def import_runs(source: str, experiment: str | None) -> int:
    """`fmnist runs import`: a bundle of run records or another MLflow store, into the configured store."""
    from fmnist.importing.runs import import_runs as run_import

    print(run_import(source, experiment, checkpoint_classifier).describe())
    return 0


def checkpoint_classifier(path: Path) -> tuple:
    """A bundle's checkpoint as the classifier the train stage logs, and an input example of 4 images in [0, 1]
    (fixed noise: the bundle holds no data)."""
    import numpy as np

    from fmnist.models.wrapper import pixels_to_input
    from fmnist.training.checkpoint import classifier_from_checkpoint, load_checkpoint

    model = classifier_from_checkpoint(load_checkpoint(path))
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    return model, pixels_to_input(images).numpy()


def predict(images: list[str], model_uri: str | None, params_file: Path, allow_unverified: bool = False) -> int:
    from fmnist import tracking
    from fmnist.predict import predict_files
    from fmnist.tracking.trust import load_verified

    if model_uri is None:
        model_uri = f"models:/{load_params(params_file).registered_model}@champion"
    tracking.configure(must_exist=True)
    model = load_verified(model_uri, allow_unverified)
    model.eval()
    predictions, errors = predict_files(model, images)
    for p in predictions:
        print(f"{p.path}: {p.label} ({p.probability:.3f})")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


def open_ui(experiment: str | None, params_file: Path, port: int) -> int:
    """`mlflow ui` on the store (or the tracking server's own URL), opened on the profile's training runs."""
    from fmnist import tracking
    from fmnist.workflows.ui import open_ui as open_training_view

    name, _ = tables_experiment(experiment, params_file)
    return open_training_view(name, tracking.configure(must_exist=True), port=port)


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535, e.g. 5001")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fmnist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile", help="set params.yaml's profile (a name under its profiles:)")
    prof.add_argument("name")
    profs = sub.add_parser("profiles", help="list the profiles params.yaml defines")
    pipe = sub.add_parser("pipeline", help="set the profile and run the whole DVC pipeline (dvc repro)")
    pipe.add_argument("name")
    rec = sub.add_parser("recipe", help="print a recipe as a profile runs it, every layer merged")
    rec.add_argument("name")
    rec.add_argument("--profile", help="a profile under profiles: (default: params.yaml's profile:)")
    train = sub.add_parser("train", help="train and evaluate one recipe with param overrides")
    train.add_argument("arch")
    train.add_argument("--no-resume", action="store_true",
                       help="start at epoch 1 even if an interrupted run of the same recipe saved its state")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param (repeatable; several may share one argument, space-separated)")
    speed = record_commands.add_parsers(sub)
    tables = sub.add_parser("tables", help="rebuild the report's tables from MLflow alone")
    tables.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                               "sqlite:///mlflow.db in the current directory)")
    tables.add_argument("--experiment", help="experiment name (default: the experiment of the profile in "
                                              "--params, as for `dvc repro` and `fmnist predict`)")
    tables.add_argument("--run-id", help="report run id (default: the experiment's latest report run)")
    tables.add_argument("--format", choices=("markdown", "json"), default="markdown")
    pred = sub.add_parser("predict", help="classify PNG/JPEG files with the champion model or any model URI")
    pred.add_argument("images", nargs="+")
    pred.add_argument("--model", help="MLflow model URI (default: models:/<registered model>@champion, the "
                                      "registered model named in params.yaml for its profile)")
    pred.add_argument("--allow-unverified", action="store_true",
                      help="load a model whose SHA-256 fmnist did not record (only one you trust: it is a pickle)")
    sub.add_parser("models", help="list the registered networks (a recipe names one with `network:`)")
    runs = sub.add_parser("runs", help="MLflow runs left RUNNING by a process that is gone; `runs import` copies "
                                       "runs made elsewhere into this store")
    runs.add_argument("--stale", action="store_true", help="list them (the default)")
    runs.add_argument("--close", action="store_true", help="close them as KILLED, with the reason as a tag")
    runs_sub = runs.add_subparsers(dest="runs_command")
    imp = runs_sub.add_parser("import", help="import runs (once) from a bundle of run records or another store")
    imp.add_argument("source", help="a bundle folder or .tar.gz, an MLflow .db or sqlite:/// URI, an mlruns folder, "
                                    "or an http(s):// tracking URI")
    imp.add_argument("--experiment", help="only the runs of this experiment (default: every experiment)")
    exps = sub.add_parser("exps", help="DVC experiments as one Markdown table: the params that differ and "
                                       "the headline metrics (dvc exp show, readable)")
    exps.add_argument("--all-columns", action="store_true", help="every param and metric column")
    exps.add_argument("--input", type=Path, help="read this saved `dvc exp show --json` output instead of "
                                                 "running it")
    ui = sub.add_parser("ui", help="mlflow ui on the store, opened on the training runs by test accuracy and "
                                   "their validation curves (the tracking server's URL when MLFLOW_TRACKING_URI "
                                   "names one)")
    ui.add_argument("--experiment", help="experiment name (default: the experiment of the profile in --params)")
    ui.add_argument("--port", type=port_number, default=5000, help="port on 127.0.0.1 (default: 5000)")
    ci_commands.add_parsers(sub)
    sweep_commands.add_parsers(sub)
    for p in (prof, profs, pipe, rec, train, speed, pred, tables, ui):
        p.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    run_main(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "profile":
        set_profile(args.params, args.name, check_every_profile)
    elif args.command == "profiles":
        print(list_profiles(args.params))
    elif args.command == "recipe":
        print(show_recipe(args.name, args.profile, args.params), end="")
    elif args.command == "pipeline":
        return run_pipeline(args.name, args.params)
    elif args.command == "train":
        overrides = split_overrides(args.overrides)
        return train_and_evaluate(args.arch, overrides, args.params, resume=not args.no_resume)
    elif args.command in ("speedrun", "ensemble"):
        return record_commands.dispatch(args)
    elif args.command == "predict":
        return predict(args.images, args.model, args.params, args.allow_unverified)
    elif args.command == "tables":
        print_tables(args.tracking_uri, args.experiment, args.run_id, args.format, args.params)
    elif args.command == "ci":
        return ci_commands.ci(args)
    elif args.command == "server":
        return ci_commands.server(args)
    elif args.command == "sweep":
        return sweep_commands.dispatch(args)
    elif args.command == "ui":
        return open_ui(args.experiment, args.params, args.port)
    elif args.command == "exps":
        print(show_experiments(args.input, args.all_columns))
    elif args.command == "runs" and args.runs_command == "import":
        return import_runs(args.source, args.experiment)
    elif args.command == "runs":
        return list_stale_runs(close=args.close)
    elif args.command == "models":
        from fmnist.models import list_models

        print("\n".join(list_models()))
    return 0


if __name__ == "__main__":
    main()
