"""`fmnist sweep create|worker|status|best|apply`: recipe searches and seed grids on Optuna (docs/scale.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fmnist.core.errors import ConfigError


def add_parsers(sub) -> argparse.ArgumentParser:
    sweep = sub.add_parser("sweep", help="search a recipe's space (sweeps: in params.yaml) or run its seeds, on "
                           "Optuna with any number of worker processes")
    commands = sweep.add_subparsers(dest="sweep_command", required=True)
    create = commands.add_parser("create", help="create the study of sweeps.NAME (a search), or with --seeds a seed "
                                 "grid of its recipe")
    create.add_argument("name", metavar="NAME", help="a sweep under sweeps: in params.yaml")
    create.add_argument("--params", default="params.yaml", type=Path)
    create.add_argument("--study", help="the study's name (default: NAME; NAME-seeds or NAME-best-seeds for a grid)")
    create.add_argument("--seeds", type=int, help="a seed grid of N seeds (train.seed, +1, ...) at the profile's "
                        "budget instead of a search")
    create.add_argument("--best", nargs="?", const="", metavar="STUDY", help="the grid runs the best keys of this "
                        "search study (default: NAME)")
    create.add_argument("--tracking-uri", help="where the trials' MLflow runs go (default: $MLFLOW_TRACKING_URI, else "
                        "mlflow.db here); every worker logs there")
    create.add_argument("--heartbeat", type=int, default=None, metavar="S",
                        help="seconds between a trial's heartbeats (default 10); silent for 3 of them = dead")
    worker = commands.add_parser("worker", help="run trials until the study has its count (one process: start one "
                                 "per GPU or CPU share, on any machine that reaches the database)")
    worker.add_argument("study")
    worker.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    worker.add_argument("--gpu", help="CUDA_VISIBLE_DEVICES for this worker, e.g. 3")
    worker.add_argument("--max-trials", type=int, help="stop after this many trials here")
    worker.add_argument("--split", type=Path, default=Path("data/split"))
    worker.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    status = commands.add_parser("status", help="trial counts and the best so far; fails dead trials (retried)")
    status.add_argument("study")
    best = commands.add_parser("best", help="the best trial's recipe keys and MLflow run")
    best.add_argument("study")
    apply = commands.add_parser("apply", help="write the best trial's keys into params.yaml (the sweep's recipe, "
                                "under budgets.PROFILE; comments kept)")
    apply.add_argument("study")
    apply.add_argument("--params", default="params.yaml", type=Path)
    for p in (create, worker, status, best, apply):
        p.add_argument("--storage", help="the study's database: postgresql://USER@HOST:PORT/DB or sqlite:///PATH "
                       "(default: $FMNIST_SWEEP_STORAGE, else .fmnist/sweeps.db)")
    return sweep


def dispatch(args: argparse.Namespace) -> int:
    from fmnist.sweep import study as studies

    url = studies.storage_url(args.storage)
    if args.sweep_command == "create":
        return create(args, url)
    if args.sweep_command == "worker":
        from fmnist.sweep.worker import run_worker
        from fmnist.workflows.fit_data import TrainPaths

        if args.threads < 0 or (args.max_trials is not None and args.max_trials < 1):
            raise ConfigError("--threads must be >= 0 and --max-trials >= 1")
        paths = TrainPaths.for_arch("sweep", args.split, args.prepared)
        ran = run_worker(args.study, url, paths, threads=args.threads, gpu=args.gpu, max_trials=args.max_trials)
        print(f"worker done: {ran} trials here")
        return 0
    study, spec = studies.load(args.study, url)
    if args.sweep_command == "status":
        studies.reconcile(study, spec)
        print(studies.summary(study, spec))
        return 0
    keys, trial = best_keys(study, spec)
    if args.sweep_command == "best":
        print(json.dumps({"trial": trial.number, "best_val_acc": trial.value, "keys": keys,
                          "mlflow_run_id": trial.user_attrs.get("mlflow_run_id")}, indent=1))
        return 0
    from fmnist.params_edit import set_budget_keys
    from fmnist.sweep.space import budget_or_recipe

    set_budget_keys(args.params, spec.run.name, spec.run.profile, {budget_or_recipe(k): v for k, v in keys.items()})
    print(f"{args.params}: recipes.{spec.run.name}.budgets.{spec.run.profile} now has trial {trial.number}'s keys "
          f"{json.dumps(keys)}")
    return 0


def best_keys(study, spec) -> tuple[dict, object]:
    from fmnist.sweep.space import chosen_keys

    if spec.kind != "search":
        raise ConfigError(f"study {study.study_name} is a seed grid: it has no best keys; give the search's study")
    try:
        trial = study.best_trial
    except ValueError:
        raise ConfigError(f"study {study.study_name} has no complete trial yet; run workers first") from None
    return chosen_keys(spec.sweep, trial.params), trial


def create(args: argparse.Namespace, url: str) -> int:
    from fmnist import tracking
    from fmnist.core.io import file_sha256
    from fmnist.sweep import study as studies
    from fmnist.sweep.space import load_sweep
    from fmnist.workflows.fit_data import TrainPaths

    sweep, run = load_sweep(args.params, args.name)
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds: got {args.seeds}, need at least 1")
    if args.best is not None and args.seeds is None:
        raise ConfigError("--best picks the keys a seed grid runs: give --seeds N with it")
    heartbeat = args.heartbeat if args.heartbeat is not None else studies.HEARTBEAT_S
    if heartbeat < 1:
        raise ConfigError(f"--heartbeat: got {heartbeat}, need at least 1 second")
    keys, kind, name = {}, "search", args.study or args.name
    if args.seeds is not None:
        kind = "seeds"
        if args.best is not None:
            searched = args.best or args.name
            keys = best_keys(*studies.load(searched, url, with_heartbeat=False))[0]
            name = args.study or f"{searched}-best-seeds"
        else:
            name = args.study or f"{args.name}-seeds"
    paths = TrainPaths.for_arch(run.name)
    missing = [str(p) for p in paths.inputs().values() if not p.is_file()]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: missing; run `dvc repro split` first (the study records the data's "
                          "SHA-256 so that every worker trains on the same split)")
    uri = tracking.configure(".", uri=args.tracking_uri)
    seeds = [run.train.seed + i for i in range(args.seeds or 0)]
    spec = studies.Spec(kind, run, sweep, args.seeds or sweep.trials, seeds, keys, uri, f"{run.experiment}-sweep",
                        heartbeat, {k: file_sha256(p) for k, p in paths.inputs().items()})
    studies.create(name, url, spec)
    print(f"study {name} created ({kind}: {spec.trials} trials of {run.name} on the {run.profile} profile); start "
          f"workers: fmnist sweep worker {name}" + (f" --storage {args.storage}" if args.storage else ""))
    return 0
