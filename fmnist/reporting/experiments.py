"""`fmnist exps`: DVC experiments side by side, readable. `dvc exp show` prints every param and every
metric of every stage (over a hundred columns here, each `...` when piped); this keeps the params
that differ between the experiments and the headline metrics: per architecture its test accuracy
and training time, and the champion. Pure functions of `dvc exp show --json` output (no DVC, no files).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fmnist.reporting.tables import cell, markdown_table

HEADLINE = re.compile(r"^(?P<arch>[\w-]+)\.(?P<metric>test_acc|train_seconds|best_val_acc)$")
CHAMPION_KEY = "champion_val_acc"
ROW_KEYS = ("Experiment", "rev", "created")


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], (", ".join(map(str, data)) if isinstance(data, list) else data)


def _files(section: dict | None) -> Iterator[tuple[str, str, Any]]:
    """(file, flattened key, value) of a params or metrics section of one revision."""
    for file, content in (section or {}).items():
        yield from ((file, key, value) for key, value in _flatten((content or {}).get("data") or {}))


def _revisions(show: list[dict]) -> Iterator[tuple[str, dict, str | None]]:
    """(name, revision record, error) for the workspace, each baseline commit and its experiments."""
    for baseline in show:
        yield baseline.get("name") or baseline["rev"], baseline, baseline.get("error")
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                yield experiment.get("name") or rev.get("name") or rev["rev"], rev, rev.get("error")


def parse_exp_show(show: list[dict]) -> tuple[list[dict], dict[str, list[str]]]:
    """One flat row per revision, and the param and metric column names. A key that two files share
    (every `metrics/eval/ARCH.json` has a `test_acc`) is named `file:key`; a unique key is named alone."""
    raw: list[tuple[dict, list[tuple[str, str, str, Any]]]] = []
    for name, rev, error in _revisions(show):
        data = rev.get("data") or {}
        row = {"Experiment": name, "rev": str(rev.get("rev") or "")[:7] if name != rev.get("rev") else "",
               "created": (data.get("timestamp") or "")[:16].replace("T", " "),
               "error": (error or {}).get("msg") if isinstance(error, dict) else error}
        values = [("params", *item) for item in _files(data.get("params"))]
        values += [("metrics", *item) for item in _files(data.get("metrics"))]
        raw.append((row, values))
    files_of: dict[tuple[str, str], set[str]] = {}
    for _, values in raw:
        for section, file, key, _ in values:
            files_of.setdefault((section, key), set()).add(file)
    columns: dict[str, list[str]] = {"params": [], "metrics": []}
    rows = []
    for row, values in raw:
        for section, file, key, value in values:
            name = key if len(files_of[(section, key)]) == 1 else f"{file}:{key}"
            if name not in columns[section]:
                columns[section].append(name)
            row[name] = value
        rows.append(row)
    return rows, columns


def differing(rows: list[dict], names: list[str]) -> list[str]:
    """The columns whose value is not the same in every row (a missing value counts as a value)."""
    return [n for n in names if len({repr(row.get(n)) for row in rows}) > 1]


def _champion(row: dict, archs: list[str]) -> str | None:
    """The architecture(s) whose best validation accuracy is the champion's (the report registers
    the best by validation accuracy)."""
    best = row.get(CHAMPION_KEY)
    if best is None:
        return None
    hits = [a for a in archs if row.get(f"{a}.best_val_acc") == best]
    return " = ".join(hits) or None


def headline_table(rows: list[dict], columns: dict[str, list[str]]) -> tuple[list[dict], list[str], list[str]]:
    """(rows, columns, headers): the experiment, the params that differ, the champion, and per
    architecture its test accuracy with its training time in one cell."""
    params = differing(rows, columns["params"])
    archs = list(dict.fromkeys(m.group("arch") for name in columns["metrics"] if (m := HEADLINE.match(name))))
    out = []
    for row in rows:
        new = {k: row.get(k) for k in (*ROW_KEYS, *params, CHAMPION_KEY)}
        new["champion"] = _champion(row, archs)
        for arch in archs:
            acc, seconds = row.get(f"{arch}.test_acc"), row.get(f"{arch}.train_seconds")
            new[arch] = " ".join(filter(None, (cell(acc) if acc is not None else None,
                                               f"({seconds:.0f} s)" if isinstance(seconds, (int, float)) else None)))
        if row.get("error"):
            new["champion"] = f"error: {row['error']}"
        out.append(new)
    keys = [*ROW_KEYS, *params, "champion", CHAMPION_KEY, *archs]
    headers = [*ROW_KEYS, *params, "champion", "champion val acc", *(f"{a} test acc (train s)" for a in archs)]
    return out, keys, headers


def exps_markdown(show: list[dict], all_columns: bool = False) -> str:
    """The Markdown table `fmnist exps` prints, with a line saying what was left out."""
    rows, columns = parse_exp_show(show)
    if not rows:
        return "no DVC experiments found (run `dvc exp run` or `make run` first)"
    if all_columns:
        keys = [*ROW_KEYS, *columns["params"], *columns["metrics"]]
        return markdown_table(rows, keys)
    table, keys, headers = headline_table(rows, columns)
    params = [k for k in keys if k in columns["params"]]
    said = (f"{len(rows)} revisions; params that differ: {', '.join(params) if params else 'none'} "
            f"(of {len(columns['params'])}); headline metrics only (`fmnist exps --all-columns` for every column)")
    return markdown_table(table, keys, headers) + "\n\n" + said
