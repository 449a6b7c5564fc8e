"""Shared start-up for the stage scripts and the CLI: logging, and bad input as a clear message."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from fmnist.config import ConfigError, Params, load_params
from fmnist.data.fetch import DataSourceError
from fmnist.data.idx import IdxFormatError
from fmnist.models.registry import UnknownModelError

USER_ERRORS = (ConfigError, DataSourceError, IdxFormatError, UnknownModelError, FileNotFoundError, ValueError)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set recipes.cnn4.full.epochs=2 (repeatable)")
    return p


def load(args: argparse.Namespace) -> Params:
    return load_params(args.params, args.overrides)


def run_main(main: Callable[[], object]) -> None:
    """Run a stage; user errors print one clear line and exit 2 instead of a traceback
    (FMNIST_DEBUG=1 shows the traceback too)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get("FMNIST_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
