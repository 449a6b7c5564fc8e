"""DVC's experiment queue with one worker per device, measured: does each worker take tasks from the shared
queue, does the environment of `dvc queue start` (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS) reach the
experiments, does the queue drain or do the workers stop early (DVC issue 10562), wall time and load.

In a copy of the repository (sources only, git init, one commit, like tests/e2e_support.py) cut to one small
recipe of the quick profile, `dvc repro` once, then for each way of starting workers a grid of seeds is queued
(`dvc exp run --queue -S train.seed=A,B,...`) and the workers are started:

  documented  one `dvc queue start -j 1` per device, each under its own CUDA_VISIBLE_DEVICES, started
              together (`... &` then the next), as docs/ci.md said
  waited      the same commands, each started once the previous worker answers
  stepwise    `dvc queue start -j K` under device K-1, once worker K-1 answers: DVC starts only the
              workers numbered up to K that are not running yet, so each new one gets its own environment

No GPU is needed: the "devices" are CUDA_VISIBLE_DEVICES values the training records as the tag
`cuda_visible_devices` of its MLflow run (with `torch_threads`, from OMP_NUM_THREADS), so the runs say which
worker's environment they saw. Output: a markdown summary on stdout and, with --json, every figure.

    .venv/bin/python benchmarks/dvc_queue.py --modes documented,waited,stepwise --grid 4 --json /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "data", "models", "metrics", "plots", "reports", "mlflow.db", "mlflow.db.lock", "mlartifacts",
        "mlruns", "dvc.lock", ".pytest_cache", "resolved", ".fmnist", ".gpu", "results"}
MODES = ("documented", "waited", "stepwise")
DATASET = "/usr/share/datasets/fashion-mnist"


def skip_outputs(directory: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(directory) == ROOT:
        skip |= SKIP & set(names)
    if Path(directory) == ROOT / ".dvc":
        skip |= {"cache", "tmp", "config.local"} & set(names)
    return skip


def sh(*cmd: str, cwd: Path, env: dict, check: bool = True) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if check and done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def build_repo(work: Path, recipe: str, epochs: int, subset: int) -> tuple[Path, dict]:
    """The copy, its environment (the project's virtualenv first on PATH, its own MLflow store), one commit."""
    repo = work / "repo"
    shutil.copytree(ROOT, repo, ignore=skip_outputs)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(profile="quick", train_recipes=[recipe])
    params["download"].update(mirrors=[], local_dirs=[DATASET])  # offline: Debian's copy only
    params["split"]["val_fraction"] = 0.05
    params["recipes"][recipe]["budgets"]["quick"] = {"epochs": epochs, "train_subset": subset, "eval_subset": 1000}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = environment(repo)
    git = ("git", "-c", "user.name=q", "-c", "user.email=q@q")
    sh("git", "init", "-q", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*git, "commit", "-qm", "queue benchmark", cwd=repo, env=env)
    sh("dvc", "repro", f"train@{recipe}", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*git, "commit", "-qm", "baseline", cwd=repo, env=env)
    return repo, env


def environment(repo: Path) -> dict:
    """The project's virtualenv first on PATH, the copy's own MLflow store, no GPU or thread settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CUDA_VISIBLE", "OMP_NUM"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", PYTHONPATH=str(repo),
               MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", DVC_NO_ANALYTICS="true",
               FMNIST_SYSTEM_METRICS="off")
    return env


def queue_status(repo: Path, env: dict) -> dict:
    """Task counts by status and the workers' line of `dvc queue status`."""
    text = sh("dvc", "queue", "status", cwd=repo, env=env, check=False)
    counts: dict[str, int] = {}
    for line in text.splitlines():
        state = line.split()[-1] if line.strip() else ""
        if state in ("Queued", "Running", "Success", "Failed"):  # the last column: Created may hold spaces
            counts[state] = counts.get(state, 0) + 1
    workers = re.search(r"Worker status: (\d+) active, (\d+) idle", text)
    counts["workers"] = int(workers.group(1)) + int(workers.group(2)) if workers else 0
    return counts


class Starter:
    """One `dvc queue start`. Its output goes to a file, not a pipe: the worker it forks keeps the
    starter's stdout open for as long as it lives, so reading a pipe to its end would wait for the worker."""

    def __init__(self, repo: Path, env: dict, device: str, jobs: int, threads: int) -> None:
        worker_env = {**env, "CUDA_VISIBLE_DEVICES": device, "OMP_NUM_THREADS": str(threads)}
        self.out = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=worker_env,
                                     stdout=self.out, stderr=subprocess.STDOUT, text=True)

    def said(self) -> str:
        self.proc.wait(timeout=120)
        self.out.seek(0)
        return self.out.read().strip()


def wait_for_workers(repo: Path, env: dict, count: int, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if queue_status(repo, env)["workers"] >= count:
            return True
        time.sleep(1)
    return False


def start_workers(mode: str, repo: Path, env: dict, devices: list[str], threads: int) -> list[str]:
    """Start the workers the way `mode` says; the lines `dvc queue start` printed."""
    said = []
    if mode == "documented":
        starters = [Starter(repo, env, d, 1, threads) for d in devices]
        return [f"CUDA_VISIBLE_DEVICES={d} dvc queue start -j 1: {s.said()}" for d, s in zip(devices, starters)]
    for number, device in enumerate(devices, start=1):
        jobs = number if mode == "stepwise" else 1
        out = Starter(repo, env, device, jobs, threads).said()
        said.append(f"CUDA_VISIBLE_DEVICES={device} dvc queue start -j {jobs}: {out}")
        if number < len(devices) and not wait_for_workers(repo, env, number):
            said.append(f"worker {number} did not answer within 60 s")
    return said


class LoadSampler(threading.Thread):
    """The 1-minute load average every 2 s while the queue runs (the machine is shared: other work counts)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(2):
            self.samples.append(os.getloadavg()[0])


def watch_queue(repo: Path, env: dict, timeout: float) -> tuple[str, dict, list[int]]:
    """Until the queue is empty, or every worker is gone with tasks left (10562), or the timeout."""
    deadline, workers_seen = time.monotonic() + timeout, []
    while True:
        status = queue_status(repo, env)
        workers_seen.append(status["workers"])
        left = status.get("Queued", 0) + status.get("Running", 0)
        if not left:
            return "drained", status, workers_seen
        if status["workers"] == 0 and max(workers_seen) > 0:
            time.sleep(5)  # a worker between tasks may not answer the ping: look again before calling it
            status = queue_status(repo, env)
            if status["workers"] == 0 and status.get("Running", 0) == 0:
                return "stopped with tasks left", status, workers_seen
        if time.monotonic() > deadline:
            return "timed out", status, workers_seen
        time.sleep(4)  # each look is a `dvc queue status`: about a second of CPU


def runs_of(repo: Path, seeds: list[int]) -> list[dict]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["fmnist-quick"], output_format="list")
    return sorted(({"seed": int(r.data.params.get("seed", -1)), "device": r.data.tags.get("cuda_visible_devices"),
                    "threads": r.data.tags.get("torch_threads"), "status": r.info.status,
                    "start": r.info.start_time / 1000, "end": (r.info.end_time or 0) / 1000}
                   for r in runs if r.data.params.get("seed") and int(r.data.params["seed"]) in seeds),
                  key=lambda r: r["start"])


def most_at_once(runs: list[dict]) -> int:
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs if r["end"]])
    now = best = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def measure(mode: str, repo: Path, env: dict, devices: list[str], seeds: list[int], threads: int,
            timeout: float) -> dict:
    sh("dvc", "exp", "run", "--queue", "-S", f"train.seed={','.join(map(str, seeds))}", cwd=repo, env=env)
    sampler = LoadSampler()
    sampler.start()
    started = time.monotonic()
    said = start_workers(mode, repo, env, devices, threads)
    outcome, status, workers_seen = watch_queue(repo, env, timeout)
    wall = time.monotonic() - started
    sampler.stopped.set()
    runs = runs_of(repo, seeds)
    per_device = {d: sum(r["device"] == d for r in runs) for d in sorted({r["device"] for r in runs})}
    result = {"mode": mode, "started": said, "outcome": outcome, "final_status": status, "wall_s": round(wall, 1),
              "most_workers_seen": max(workers_seen), "runs": runs, "runs_per_device": per_device,
              "most_runs_at_once": most_at_once(runs), "load_max": max(sampler.samples, default=0.0),
              "load_mean": round(sum(sampler.samples) / max(1, len(sampler.samples)), 2)}
    stop_leftovers(repo, env)
    return result


def stop_leftovers(repo: Path, env: dict) -> None:
    """Nothing of one mode reaches the next: tasks left are removed, workers still up are stopped."""
    sh("dvc", "queue", "remove", "--queued", cwd=repo, env=env, check=False)
    if queue_status(repo, env)["workers"]:
        sh("dvc", "queue", "stop", "--kill", cwd=repo, env=env, check=False)
    deadline = time.monotonic() + 60
    while queue_status(repo, env)["workers"] and time.monotonic() < deadline:
        time.sleep(2)


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    lines = [f"grid: {args.grid} seeds of `{args.recipe}` ({args.epochs} epoch(s) on {args.subset} images), "
             f"devices {args.devices}, OMP_NUM_THREADS={args.threads} per worker", "",
             "| mode | queue | wall (s) | workers seen at once | runs per CUDA_VISIBLE_DEVICES | most runs at once "
             "| torch_threads | load mean / max |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        threads = sorted({x["threads"] for x in r["runs"]})
        lines.append(f"| {r['mode']} | {r['outcome']} ({json.dumps(r['final_status'])}) | {r['wall_s']} | "
                     f"{r['most_workers_seen']} | {json.dumps(r['runs_per_device'])} | {r['most_runs_at_once']} | "
                     f"{', '.join(map(str, threads))} | {r['load_mean']} / {r['load_max']:.2f} |")
    for r in results:
        lines += ["", f"{r['mode']}: " + "; ".join(r["started"])]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--devices", default="0,1", help="one CUDA_VISIBLE_DEVICES value per worker")
    p.add_argument("--grid", type=int, default=4, help="seeds queued per mode")
    p.add_argument("--recipe", default="mlp")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--subset", type=int, default=2000, help="training images per experiment")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each worker (torch honours it)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mode before giving up on the queue")
    p.add_argument("--work", type=Path, help="folder for the copy (default: a new temporary one, removed after)")
    p.add_argument("--json", type=Path, help="write every figure here (after each mode)")
    p.add_argument("--reuse", action="store_true", help="the copy under --work is already built: queue in it")
    p.add_argument("--first-seed", type=int, default=100, help="the first mode queues seeds from here")
    args = p.parse_args()
    modes, devices = args.modes.split(","), args.devices.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        p.error(f"unknown mode {unknown[0]!r}: use {', '.join(MODES)}")
    if not Path(DATASET, "train-images-idx3-ubyte.gz").is_file():
        sys.exit(f"error: {DATASET} is missing: install Debian's dataset-fashion-mnist (make setup does)")
    work = args.work or Path(tempfile.mkdtemp(prefix="dvc-queue-"))
    try:
        t0 = time.monotonic()
        repo, env = (work / "repo", environment(work / "repo")) if args.reuse else \
            build_repo(work, args.recipe, args.epochs, args.subset)
        print(f"copy built and baseline reproduced in {time.monotonic() - t0:.0f} s: {repo}", flush=True)
        results = []
        for number, mode in enumerate(modes):
            first = args.first_seed + 100 * number
            results.append(measure(mode, repo, env, devices, list(range(first, first + args.grid)), args.threads,
                                   args.timeout))
            print(f"{mode}: {results[-1]['outcome']} in {results[-1]['wall_s']} s", flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
        print(markdown(results, args))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
