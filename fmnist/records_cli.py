"""The records' commands: `fmnist speedrun` (a record attempt by the speed-run rules) and `fmnist ensemble`
(soft voting of an experiment's networks, chosen on validation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist.core.config import ConfigError, load_params
from fmnist.core.entry import split_overrides


def add_parsers(sub) -> argparse.ArgumentParser:
    """The two commands' parsers; returns speedrun's, which takes --params like the CLI's other commands."""
    speed = sub.add_parser("speedrun", help="time a fixed recipe by the speed-run rules over n seeds (a record "
                           "attempt): the last epoch's model on every test image, logged to MLflow")
    speed.add_argument("arch", metavar="RECIPE")
    speed.add_argument("--seeds", type=int, default=5)
    speed.add_argument("--first-seed", type=int, help="default: train.seed")
    speed.add_argument("--data", default="all", help="all: the 60,000 training images (default); split: the 54,000 "
                       "of the validation split's training part")
    speed.add_argument("--no-mlflow", dest="log", action="store_false", help="time and print only")
    speed.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param (repeatable)")
    ens = sub.add_parser("ensemble", help="soft-vote an experiment's networks, chosen on validation, into a run")
    ens.add_argument("--experiment", required=True)
    ens.add_argument("--max-members", type=int, default=5)
    return speed


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "speedrun":
        overrides = split_overrides(args.overrides)
        return speedrun(args.arch, overrides, args.params, args.seeds, args.first_seed, args.data, args.log)
    return ensemble(args.experiment, args.max_members)


def speedrun(arch: str, overrides: list[str], params_file: Path, seeds: int, first_seed: int | None, data: str,
             log: bool) -> int:
    """A record attempt: every seed of a fixed recipe timed by the speed-run rules, the table printed."""
    from fmnist.workflows.speedrun import speed_record

    if seeds < 1:
        raise ConfigError(f"--seeds: got {seeds}, need at least 1")
    params = load_params(params_file, overrides)
    run = params.run_of(arch)
    start = run.train.seed if first_seed is None else first_seed
    attempt = speed_record(run, list(range(start, start + seeds)), data, log=log)
    print(attempt.table())
    return 0


def ensemble(experiment: str, max_members: int) -> int:
    from fmnist.workflows.ensemble import ensemble_experiment

    chosen, run_id = ensemble_experiment(experiment, max_members)
    names = ", ".join(m.name for m in chosen.members)
    print(f"ensemble of {len(chosen.members)} ({names}), chosen on validation: val acc {chosen.val_acc:.4f}, test acc "
          f"{chosen.test_acc:.4f}; MLflow run {run_id}")
    return 0
