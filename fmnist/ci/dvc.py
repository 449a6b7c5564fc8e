"""DVC as the CI steps drive it: one runner for its commands, the default remote, and the entries of
`dvc.lock` that move between CI jobs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from fmnist.core.errors import FmnistError

log = logging.getLogger("fmnist")
LOCK = "dvc.lock"


def dvc(*args: str, root: Path = Path("."), check: bool = True, echo: bool = True) -> subprocess.CompletedProcess:
    """Run `dvc ARGS` in `root` with this interpreter's DVC, echoing its output; a failure is one line."""
    log.info("$ dvc %s", " ".join(args))
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip()
    if output and echo:
        print(output, flush=True)
    if check and done.returncode != 0:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["(no output)"])[-1]
        raise FmnistError(f"dvc {' '.join(args)} failed: {last}")
    return done


def has_remote(root: Path = Path(".")) -> bool:
    """Whether a default DVC remote is configured (a laptop without one skips pull and push)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=root, capture_output=True,
                          text=True)
    return done.returncode == 0 and bool(done.stdout.strip())


def pull(*targets: str, root: Path = Path(".")) -> None:
    """What is in the remote of `targets` (all when none), and the run cache, from which `dvc repro`
    restores a stage whose deps and params ran before (the data stages a job without this commit's
    dvc.lock entries needs); what is in neither is left to `dvc repro`."""
    if has_remote(root):
        dvc("pull", "--allow-missing", "--run-cache", *targets, root=root)
    else:
        log.info("no default DVC remote: nothing to pull (dvc remote add -d NAME URL sets one)")


def push(*targets: str, root: Path = Path(".")) -> None:
    if has_remote(root):
        dvc("push", "--run-cache", *targets, root=root)
    else:
        log.info("no default DVC remote: nothing pushed")


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    return yaml


def lock_entry(stage: str, root: Path = Path(".")) -> dict:
    """The stage's entry in dvc.lock, as a plain dict."""
    stages = (_yaml().load(root / LOCK) or {}).get("stages", {}) if (root / LOCK).is_file() else {}
    if stage not in stages:
        raise FmnistError(f"{LOCK} has no entry for {stage}; run `dvc repro {stage}` first")
    return _plain(stages[stage])


def _plain(node):
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def merge_lock_entries(entries: dict[str, dict], root: Path = Path(".")) -> None:
    """Write other jobs' stage entries into dvc.lock, keeping every other entry as it is."""
    yaml, path = _yaml(), root / LOCK
    data = yaml.load(path) if path.is_file() else None
    data = data or {"schema": "2.0", "stages": {}}
    data.setdefault("stages", {}).update(entries)
    tmp = path.with_suffix(".lock.tmp")
    with open(tmp, "w") as fh:
        yaml.dump(data, fh)
    tmp.replace(path)
