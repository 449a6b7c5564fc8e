"""Edits of params.yaml that change one value and nothing else (comments, layout and flow style kept):
ruamel.yaml's round-trip parser gives the value's exact position, and only that scalar is replaced
(a dump would reflow the file). The result is validated before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fmnist.core.config import Params, ParamsFile, parse_file, read_params_file
from fmnist.core.errors import ConfigError
from fmnist.core.io import atomic_write_text


def set_profile(params_file: Path, profile: str, check: Callable[[ParamsFile], None] | None = None) -> Params:
    """Set the top-level `profile:` once the file resolves for it (and passes `check`, e.g. the model
    registry's for every profile); returns the params as that profile runs them."""
    from ruamel.yaml import YAML

    try:
        raw = parse_file(read_params_file(params_file))
        params = raw.resolve(profile)
        if check is not None:
            check(raw)
    except ConfigError as err:
        raise ConfigError(f"{params_file}: {err}") from None
    text = params_file.read_text()
    try:
        data = YAML().load(text)
    except Exception as err:  # ruamel's stricter parser (duplicate keys, ...) raises several types
        raise ConfigError(f"{params_file}: cannot be edited safely ({str(err).splitlines()[0]}); fix the file "
                          "or edit profile: by hand") from None
    if "profile" not in data:
        raise ConfigError(f"{params_file}: no top-level 'profile:' key to change; add `profile: {profile}`")
    line, column = data.lc.value("profile")
    lines = text.splitlines(keepends=True)
    old = str(data["profile"])
    if lines[line][column:column + len(old)] != old:
        raise ConfigError(f"{params_file}: write the profile as a plain value (`profile: full`), not quoted or "
                          "in flow style, so it can be switched")
    lines[line] = lines[line][:column] + profile + lines[line][column + len(old):]
    atomic_write_text(params_file, "".join(lines))
    return params
