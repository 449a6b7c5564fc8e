"""Reliability measurements (a script, not a test): SIGKILL trials under `dvc repro`, and trainings
running at once against one new SQLite store. Prints Markdown tables for docs/reliability.md.

    python benchmarks/reliability.py kill --data data --trials 5
    python benchmarks/reliability.py concurrency --data data

`--data` is a folder holding the pipeline's `prepared/` and `split/` outputs (`dvc repro split`).
Each measurement works in a throw-away copy of the project, so the checkout is never touched.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("epoch_seconds", "cumulative_seconds", "test_seconds")


def make_project(data: Path, recipes: dict, architectures: list[str]) -> Path:
    repo = Path(tempfile.mkdtemp(prefix="fmnist-reliability-"))
    for item in ("dvc.yaml", "stages", "fmnist"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, repo / item)
    shutil.copytree(data, repo / "data", ignore=shutil.ignore_patterns("raw"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(profile="quick", train_recipes=architectures)
    params["train"]["device"] = "cpu"
    for arch, budget in recipes.items():
        params["recipes"][arch].setdefault("budgets", {})["quick"] = budget
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    return repo


def env_for(repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def history(repo: Path, arch: str) -> list[dict]:
    with open(repo / "metrics/history" / f"{arch}.csv") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def runs_of(repo: Path) -> list[tuple]:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute("select run_uuid, name, status from runs").fetchall()


def repro(repo: Path, arch: str, log: Path) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", f"train@{arch}"], cwd=repo,
                            env=env_for(repo), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def epochs_logged(log: Path, arch: str) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.startswith(f"{arch} epoch "))


def kill_trials(args: argparse.Namespace) -> None:
    arch, epochs = args.arch, args.epochs
    budget = {"epochs": epochs, "train_subset": args.train_subset, "eval_subset": args.eval_subset}
    reference = make_project(args.data, {arch: budget}, [arch])
    load_before = "/".join(f"{x:.2f}" for x in os.getloadavg())  # 1, 5, 15 minutes: 2 cores, anything beside counts
    start = time.perf_counter()
    assert repro(reference, arch, reference / "ref.log").wait() == 0, (reference / "ref.log").read_text()
    total = time.perf_counter() - start
    expected = history(reference, arch)
    rows, rng = [], random.Random(args.seed)
    for trial in range(1, args.trials + 1):
        repo = make_project(args.data, {arch: budget}, [arch])
        log = repo / "first.log"
        process = repro(repo, arch, log)
        delay = rng.uniform(0.25, 0.9) * total
        time.sleep(delay)
        done_before = epochs_logged(log, arch)
        os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage: nothing gets to clean up
        process.wait()
        status_after_kill = [r[2] for r in runs_of(repo) if r[1] == arch]
        again = repo / "second.log"
        assert repro(repo, arch, again).wait() == 0, again.read_text()
        text = again.read_text()
        resumed_from = next((int(w) for line in text.splitlines() if "resuming from the end of epoch" in line
                             for w in [line.split("epoch ")[1].split()[0]]), 0)
        runs = [r for r in runs_of(repo) if r[1] == arch]
        rows.append({"trial": trial, "killed after (s)": f"{delay:.1f}", "epochs done at the kill": done_before,
                     "run status after the kill": ",".join(status_after_kill), "resumed from epoch": resumed_from,
                     "epochs lost": done_before - resumed_from, "MLflow runs": len(runs),
                     "final status": ",".join(r[2] for r in runs),
                     "per-epoch metrics identical": history(repo, arch) == expected})
        shutil.rmtree(repo, ignore_errors=True)
    print(f"`{arch}`, {epochs} epochs on {args.train_subset} images; uninterrupted `dvc repro`: {total:.1f} s "
          f"(load average before the trials: {load_before}, after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())})\n")
    print(table(rows))
    shutil.rmtree(reference, ignore_errors=True)


def concurrency(args: argparse.Namespace) -> None:
    recipes = {"mlp": {"epochs": 3, "train_subset": 3000}, "cnn1": {"epochs": 2, "train_subset": 2000},
               "fastcnn": {"epochs": 2, "train_subset": 2000}, "sk_logreg": {"train_subset": 2000,
                                                                              "model": {"max_iter": 30}}}
    repo = make_project(args.data, recipes, list(recipes))
    env = {**env_for(repo), "PYTHONPATH": str(repo)}

    def chain(arch: str, seed: int, folder: str) -> subprocess.Popen:
        paths = (f"--model-dir {folder}/model --metrics {folder}/train.json --history {folder}/history.csv")
        cmd = (f"{sys.executable} stages/train.py --arch {arch} --set train.seed={seed} {paths} && "
               f"{sys.executable} stages/evaluate.py --arch {arch} --model-dir {folder}/model "
               f"--metrics {folder}/eval.json --confusion {folder}/confusion.csv --figures {folder}/eval")
        return subprocess.Popen(cmd, shell=True, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    rows = []
    for name, jobs in (("4 architectures at once, new store", [(a, 42, f"out/{a}") for a in recipes]),
                       ("4 seeds of mlp at once, own folders", [("mlp", s, f"seeds/{s}") for s in range(4)]),
                       ("4 seeds of mlp at once, one folder", [("mlp", s, "same") for s in range(4)])):
        (repo / "mlflow.db").unlink(missing_ok=True)
        shutil.rmtree(repo / "mlartifacts", ignore_errors=True)
        procs = [chain(*job) for job in jobs]
        errors = [p.communicate()[1] for p in procs]
        for job, error in zip(jobs, errors):
            if "Traceback" in error:
                print(f"--- {name}, {job}:\n" + "\n".join(error.splitlines()[-12:]), file=sys.stderr)
        ok = [p.returncode == 0 for p in procs]
        refused = sum("is being written by" in e for e in errors)
        rows.append({"scenario": name, **check(repo, jobs, ok), "refused with one line": refused,
                     "tracebacks": sum("Traceback" in e for e in errors)})
    print(table(rows))
    shutil.rmtree(repo, ignore_errors=True)


def check(repo: Path, jobs: list, ok: list[bool]) -> dict:
    """Runs, epochs and metrics expected against found in the store, and each evaluation in its own run."""
    with sqlite3.connect(repo / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
        right = 0
        epochs_expected = epochs_found = 0
        for (_arch, seed, folder), success in zip(jobs, ok):
            if not success:
                continue
            run_id = json.loads((repo / folder / "model/run.json").read_text())["run_id"]
            evaluation = json.loads((repo / folder / "eval.json").read_text())
            logged = db.execute("select value from latest_metrics where run_uuid=? and key='final_test_acc'",
                                (run_id,)).fetchone()
            right += logged is not None and abs(logged[0] - evaluation["test_acc"]) < 1e-12
            seed_tag = db.execute("select value from params where run_uuid=? and key='seed'", (run_id,)).fetchone()
            right -= seed_tag is None or int(seed_tag[0]) != seed
            rows = sum(1 for _ in open(repo / folder / "history.csv")) - 1
            epochs_expected += rows
            epochs_found += db.execute("select count(*) from metrics where run_uuid=? and key='val_acc'",
                                       (run_id,)).fetchone()[0]
    return {"trainings": len(jobs), "succeeded": sum(ok), "MLflow runs": len(runs),
            "left RUNNING": sum(status == "RUNNING" for _, status in runs),
            "epochs expected / found": f"{epochs_expected} / {epochs_found}",
            "evaluations in the right run": f"{right} / {sum(ok)}"}


def table(rows: list[dict]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    kill = sub.add_parser("kill")
    conc = sub.add_parser("concurrency")
    for s in (kill, conc):
        s.add_argument("--data", type=Path, default=ROOT / "data")
    kill.add_argument("--arch", default="fastcnn")
    kill.add_argument("--epochs", type=int, default=4)
    kill.add_argument("--train-subset", type=int, default=6000)
    kill.add_argument("--eval-subset", type=int, default=2000)
    kill.add_argument("--trials", type=int, default=5)
    kill.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    kill_trials(args) if args.what == "kill" else concurrency(args)


if __name__ == "__main__":
    main()
