"""The `fmnist` command: small tools over the same library the pipeline uses."""

from __future__ import annotations

import argparse
import re
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fmnist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile", help="set params.yaml's profile (full or quick)")
    prof.add_argument("name", choices=PROFILES)
    prof.add_argument("--params", default="params.yaml", type=Path)
    sub.add_parser("models", help="list the registered architectures")
    args = parser.parse_args(argv)
    try:
        if args.command == "profile":
            set_profile(args.params, args.name)
        elif args.command == "models":
            from fmnist.models import list_models

            print("\n".join(list_models()))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
