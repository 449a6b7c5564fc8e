"""Edits of params.yaml that change one value and nothing else (comments, layout and flow style kept):
ruamel.yaml's round-trip parser gives the value's exact position, and only that scalar is replaced
(a dump would reflow the file). The result is validated before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def set_budget_keys(params_file: Path, recipe: str, profile: str, keys: dict[str, Any]) -> Params:
    """Write dotted keys into `recipes.RECIPE.budgets.PROFILE` (e.g. `recipe.optimizer.lr`, `epochs`), so that
    only that profile runs them. ruamel.yaml round-trips the file and only the recipe's `budgets:` entry (or the
    recipe's whole entry when it is written in flow style) is taken from its output: every other line, comments
    included, stays as it was. The result must load and resolve to the keys before it is written."""
    import io

    import yaml
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    text = params_file.read_text()
    rt = YAML()
    rt.preserve_quotes, rt.width = True, 120
    rt.indent(mapping=2, sequence=4, offset=2)
    try:
        data = rt.load(text)
    except Exception as err:  # ruamel's stricter parser (duplicate keys, ...) raises several types
        raise ConfigError(f"{params_file}: cannot be edited safely ({str(err).splitlines()[0]})") from None
    entry = (data.get("recipes") or {}).get(recipe)
    if not isinstance(entry, CommentedMap):
        raise ConfigError(f"{params_file}: recipes.{recipe} is not a mapping to write into; add the recipe first")
    unit = ["recipes", recipe, "budgets"] if "budgets" in entry and not entry.fa.flow_style() else ["recipes", recipe]
    node = entry
    for part in ["budgets", profile]:
        node = _child(node, part)
    for dotted, value in keys.items():
        *parents, last = dotted.split(".")
        target = node
        for part in parents:
            target = _child(target, part)
        target[last] = value
    out = io.StringIO()
    rt.dump(data, out)
    edited = _splice(text, out.getvalue(), unit)
    try:
        params = parse_file(yaml.safe_load(edited)).resolve(profile)
    except ConfigError as err:
        raise ConfigError(f"{params_file}: the recipe would not load with these keys ({err}); nothing written") \
            from None
    atomic_write_text(params_file, edited)
    return params


def _child(node: Any, key: str) -> Any:
    from ruamel.yaml.comments import CommentedMap

    if not isinstance(node.get(key), CommentedMap):
        child = CommentedMap()
        child.fa.set_flow_style()
        node[key] = child
    return node[key]


def _entry_lines(text: str, path: list[str]) -> tuple[int, int]:
    """[first, end) lines of the entry at `path`: from its key to the next key at its level or above."""
    from ruamel.yaml import YAML

    doc = YAML().load(text)
    lines = len(text.splitlines())

    def span(parent: Any, keys: list[str], end: int) -> tuple[int, int]:
        key, names = keys[0], list(parent)
        later = names[names.index(key) + 1:]
        stop = parent.lc.key(later[0])[0] if later else end
        if len(keys) == 1:
            return parent.lc.key(key)[0], stop
        return span(parent[key], keys[1:], stop)

    return span(doc, path, lines)


def _splice(original: str, dumped: str, path: list[str]) -> str:
    """The original text with the entry at `path` replaced by the dumped text's (trailing spaces dropped)."""
    old, new = original.splitlines(keepends=True), dumped.splitlines(keepends=True)
    a, b = _entry_lines(original, path)
    c, d = _entry_lines(dumped, path)
    return "".join([*old[:a], *(line.rstrip() + "\n" for line in new[c:d]), *old[b:]])
