"""Shared start-up for the stage scripts and the CLI: logging, and the one error policy.

Expected failures (`FmnistError`: config, data, device, weights, store, outputs) print one line and
exit 2; an interruption prints one line and exits 130 (Ctrl-C) or 143 (SIGTERM); anything else is a
bug and shows its traceback. FMNIST_DEBUG=1 shows the traceback behind an expected failure too.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from fmnist.core.config import ConfigError, Params, RecipeRun, load_params
from fmnist.core.errors import FmnistError, Terminated


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set recipes.cnn4.budgets.full.epochs=2 (repeatable)")
    return p


def load(args: argparse.Namespace) -> Params:
    return load_params(args.params, args.overrides)


# Several --set overrides may share one argument (MLproject passes one string): split before each KEY=.
OVERRIDE_START = re.compile(r"\s+(?=[A-Za-z_][\w.]*=)")


def split_overrides(arguments: list[str]) -> list[str]:
    return [item for arg in arguments for item in OVERRIDE_START.split(arg.strip()) if item]


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """A train or evaluate stage's recipe: the resolve stage's file (as dvc.yaml runs it), or a recipe
    resolved here from --params and --set (by hand, to try a change without DVC)."""
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="a resolved recipe, resolved/NAME.json (what dvc.yaml passes)")
    which.add_argument("--arch", metavar="NAME", help="a recipe of --params, resolved with any --set overrides")


def load_run(args: argparse.Namespace) -> RecipeRun:
    if args.run is not None:
        if args.overrides:
            raise ConfigError("--set applies to --arch NAME (resolved from --params); a resolved file (--run) is "
                              "final: change params.yaml and run `dvc repro resolve`")
        return RecipeRun.read(args.run)
    return load(args).run_of(args.arch)


def run_main(main: Callable[[], object]) -> None:
    """Run a stage or command under the error policy; its return value (an int) is the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    debug = bool(os.environ.get("FMNIST_DEBUG"))
    try:
        code = main()
    except FmnistError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Terminated) as err:
        if debug:
            raise
        what = "interrupted (Ctrl-C)" if isinstance(err, KeyboardInterrupt) else "terminated (SIGTERM)"
        print(f"stopped: {what}; outputs written before this point are kept, the MLflow run is marked "
              "KILLED", file=sys.stderr)
        sys.exit(130 if isinstance(err, KeyboardInterrupt) else 143)
    sys.exit(code if isinstance(code, int) else 0)
