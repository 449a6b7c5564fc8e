"""The `fmnist` command: small tools over the same library the pipeline uses."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from fmnist.config import PROFILES, ConfigError, load_params
from fmnist.io import atomic_write_text

PROFILE_LINE = re.compile(r"^profile:\s*\S+", re.MULTILINE)


def set_profile(params_file: Path, profile: str) -> None:
    """Rewrite only the top-level `profile:` line, keeping the file's comments and layout."""
    if profile not in PROFILES:
        raise ConfigError(f"profile: got {profile!r}, allowed values: {', '.join(PROFILES)}")
    text = params_file.read_text()
    if not PROFILE_LINE.search(text):
        raise ConfigError(f"{params_file}: no top-level 'profile:' line to change")
    atomic_write_text(params_file, PROFILE_LINE.sub(f"profile: {profile}", text, count=1))
    load_params(params_file)  # still valid


def run_pipeline(profile: str, params_file: Path) -> int:
    """Set the profile in params.yaml (so params, dvc.lock and outputs agree), then `dvc repro`."""
    set_profile(params_file, profile)
    return subprocess.call(["dvc", "repro"])


def train_and_evaluate(arch: str, overrides: list[str], params_file: Path) -> int:
    """One architecture outside DVC, with overrides: its train then evaluate stage."""
    load_params(params_file, overrides).recipe(arch)  # fail before any work
    sets = [arg for item in overrides for arg in ("--set", item)]
    stages = Path(__file__).resolve().parents[1] / "stages"
    for stage in ("train.py", "evaluate.py"):
        code = subprocess.call([sys.executable, str(stages / stage), "--arch", arch, "--params", str(params_file),
                                *sets])
        if code:
            return code
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fmnist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile", help="set params.yaml's profile (full or quick)")
    prof.add_argument("name", choices=PROFILES)
    pipe = sub.add_parser("pipeline", help="set the profile and run the whole DVC pipeline (dvc repro)")
    pipe.add_argument("name", choices=PROFILES)
    train = sub.add_parser("train", help="train and evaluate one architecture with param overrides")
    train.add_argument("arch")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param (repeatable; several may share one argument, space-separated)")
    sub.add_parser("models", help="list the registered architectures")
    for p in (prof, pipe, train):
        p.add_argument("--params", default="params.yaml", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "profile":
            set_profile(args.params, args.name)
        elif args.command == "pipeline":
            sys.exit(run_pipeline(args.name, args.params))
        elif args.command == "train":
            overrides = [item for arg in args.overrides for item in arg.split()]
            sys.exit(train_and_evaluate(args.arch, overrides, args.params))
        elif args.command == "models":
            from fmnist.models import list_models

            print("\n".join(list_models()))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
