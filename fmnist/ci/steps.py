"""The train and report jobs of CI retraining, as commands that run the same on a laptop, a CI runner
and the rehearsal.

A train job (`fmnist ci train ARCH --bundle DIR`) pulls the data, reproduces `train@ARCH`, pushes the
model to the DVC remote and writes a bundle: the stage's dvc.lock entry and its small outputs that DVC
does not cache (metrics and history, kept in git). The report job (`fmnist ci report`) merges the
bundles into dvc.lock, pulls what the remote has, runs whatever is left (evaluate, report; never a
training), pushes, and writes the pull-request comment: the metrics diff against the base branch, the
champion gate's decision and the key plots.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from pathlib import Path

from fmnist.ci import dvc as dvc_steps
from fmnist.ci.plan import DATA_STAGE, architectures_to_train, dry_run, stages_to_run
from fmnist.core.errors import ConfigError, FmnistError
from fmnist.core.io import atomic_write_text, read_json

log = logging.getLogger("fmnist")
ENTRY_FILE = "lock.json"  # a bundle's dvc.lock entry
SUMMARY = "metrics/summary.json"
CHAMPION = Path("reports/champion.json")
PLOTS = ("reports/figures/accuracy_vs_time.png", "reports/figures/learning_curves.png")
RESULTS = ("dvc.lock", "metrics", "plots", "reports")  # what a results commit holds (git-tracked outputs)
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping", re.MULTILINE)
FROM_CACHE = re.compile(r"^Stage '([^']+)' is cached - skipping run", re.MULTILINE)


def train_stage(arch: str) -> str:
    return f"train@{arch}"


def _small_outputs(entry: dict) -> list[str]:
    """The stage's file outputs: the history and metrics, which DVC does not cache (git holds them)."""
    return [out["path"] for out in entry.get("outs", []) if not out.get("md5", "").endswith(".dir")]


def train(arch: str, bundle: Path, root: Path = Path("."), force: bool = False) -> dict:
    """Reproduce train@ARCH (the data pulled, never rebuilt here when the plan job pushed it), push the
    model, and write the bundle the report job merges."""
    stage = train_stage(arch)
    started = time.monotonic()
    dvc_steps.pull(DATA_STAGE, "--with-deps", root=root)  # the data the plan job pushed
    if force:  # the data as it is, then this stage alone, whether or not it changed
        dvc_steps.dvc("repro", DATA_STAGE, root=root)
        dvc_steps.dvc("repro", "--force", "--single-item", stage, root=root)
    else:
        dvc_steps.dvc("repro", stage, root=root)
    dvc_steps.push(stage, root=root)
    entry = dvc_steps.lock_entry(stage, root)
    target = bundle / arch
    if target.exists():
        shutil.rmtree(target)
    for rel in _small_outputs(entry):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target / rel)
    atomic_write_text(target / ENTRY_FILE, json.dumps({stage: entry}, indent=1))
    seconds = time.monotonic() - started
    log.info("ci train: %s done in %.0f s; bundle %s", arch, seconds, target)
    return {"arch": arch, "seconds": seconds, "bundle": str(target)}


def read_bundles(bundles: list[Path]) -> dict[str, tuple[Path, dict]]:
    """stage -> (bundle dir, dvc.lock entry); a bundle without its entry file is an error up front."""
    found = {}
    for path in bundles:
        entry_file = path / ENTRY_FILE
        if not entry_file.is_file():
            raise ConfigError(f"{path}: not a train bundle (no {ENTRY_FILE}); pass the folders "
                              "`fmnist ci train ARCH --bundle DIR` wrote")
        for stage, entry in read_json(entry_file).items():
            found[stage] = (path, entry)
    return found


def merge_bundles(bundles: list[Path], root: Path = Path(".")) -> list[str]:
    """Bring the train jobs' results into this workspace: dvc.lock entries and the small outputs."""
    found = read_bundles(bundles)
    for _stage, (path, entry) in found.items():
        for rel in _small_outputs(entry):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path / rel, root / rel)
    dvc_steps.merge_lock_entries({stage: entry for stage, (_, entry) in found.items()}, root)
    return sorted(found)


def report(bundles: list[Path], comment: Path, base: str, root: Path = Path(".")) -> dict:
    """Merge the bundles, pull, run the rest of the pipeline (no training), push, write the comment."""
    started = time.monotonic()
    merged = merge_bundles(bundles, root)
    dvc_steps.pull(root=root)
    left = architectures_to_train(dry_run(root))
    if left:
        raise FmnistError(f"train stages still out of date after merging the bundles: {', '.join(left)}; "
                          "run `fmnist ci train ARCH --bundle DIR` for each and pass its bundle")
    done = dvc_steps.dvc("repro", root=root)
    dvc_steps.push(root=root)
    output = done.stdout + done.stderr
    record = {"merged": merged, "ran": stages_to_run(output), "skipped": SKIPPED.findall(output),
              "from_run_cache": FROM_CACHE.findall(output), "seconds": time.monotonic() - started}
    gate = read_json(root / CHAMPION).get("gate", {}) if (root / CHAMPION).is_file() else {}
    record["gate"] = gate
    atomic_write_text(comment, comment_text(metrics_diff(base, root), gate, record, root))
    log.info("ci report: comment written to %s", comment)
    return record


def metrics_diff(base: str, root: Path = Path(".")) -> str:
    done = dvc_steps.dvc("metrics", "diff", base, "--md", "--targets", SUMMARY, root=root, check=False)
    if done.returncode != 0:
        return f"(no metrics diff against `{base}`: {(done.stderr.strip().splitlines() or ['?'])[-1]})"
    return done.stdout.strip() or f"(no metric changed against `{base}`)"


def comment_text(diff: str, gate: dict, record: dict, root: Path = Path(".")) -> str:
    lines = ["## fmnist: retraining results", ""]
    if gate:
        challenger = gate.get("challenger", {})
        lines += [f"**Champion gate: {gate.get('decision')}.** {gate.get('reason', '')}.", "",
                  f"Challenger: `{challenger.get('arch')}` (run `{challenger.get('run_id')}`, model version "
                  f"{challenger.get('version')}, alias `{challenger.get('alias')}`); margin {gate.get('margin')}, "
                  f"test tolerance {gate.get('test_tolerance')}.", ""]
    lines += [f"### Metrics against the base (`dvc metrics diff`, {SUMMARY})", "", diff, "",
              "### Stages", "",
              f"- trained by the train jobs: {', '.join(record['merged']) or 'none'}",
              f"- run by the report job: {', '.join(record['ran']) or 'none'}",
              f"- up to date (from dvc.lock and the remote): {len(record['skipped'])} stages",
              f"- restored from the run cache: {', '.join(record['from_run_cache']) or 'none'}", ""]
    plots = [p for p in PLOTS if (root / p).is_file()]
    if plots:
        lines += ["### Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def commit_results(message: str, root: Path = Path(".")) -> bool:
    """Commit dvc.lock and the git-tracked outputs (metrics, plots, reports); False when nothing changed."""
    present = [p for p in RESULTS if (root / p).exists()]
    subprocess.run(["git", "add", *present], cwd=root, check=True)  # DVC's .gitignore files keep cached outputs out
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=root).returncode == 0:
        return False
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=root, check=True)
    return True


def push_branch(branch: str, root: Path = Path(".")) -> None:
    done = subprocess.run(["git", "push", "origin", f"HEAD:{branch}"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise FmnistError(f"git push origin HEAD:{branch} failed: {last}; pull, re-run the report job, push again")
