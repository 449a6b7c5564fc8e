"""`fmnist sweep` rehearsed on loopback (a script, not a test): faults in the middle of a sweep, then its wall time
with 1, 2 and 4 workers. Prints Markdown for docs/scale.md (`--json` also writes the figures).

    python benchmarks/sweep_rehearsal.py --data data --json /tmp/rehearsal.json

A loopback server (`fmnist/ci/server.py`: PostgreSQL + `mlflow server`, free ports, a temporary folder) holds the
MLflow runs (database `mlflow`) and the studies (database `sweeps` on the same PostgreSQL server). Every worker is
a separate process (its own session, one torch thread) in a working copy of its own: a `git clone` of the
committed tree with `--data`'s `split/` and `prepared/` copied in, so the workers run the committed code.

Faults, with 4 workers on one study: worker 0 is SIGKILLed once its trial has logged an epoch; worker 1's process
group is SIGSTOPped once its trial has logged an epoch (a machine that vanished: its pid still exists, it sends no
heartbeat) and stays stopped until the others are done, then is continued (SIGCONT: it must go on, and change no
finished trial); PostgreSQL is stopped (fast shutdown: connections dropped)
and started again once `--restart-after` trials are finished. Checked at the end: the count reached, no trial that
was finished before the restart lost, nothing RUNNING or WAITING in Optuna, nothing RUNNING in MLflow, what became of
each dead trial and its run, and each worker's exit.

Scaling: the same sweep (a new study each time, no faults) with 1, 2 and 4 workers; wall time from the first
worker's start to the last one's exit, with the 1-minute load average sampled every 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from sweep_rehearsal_report import FINISHED, LoadSampler, markdown, outage_lines, tally, tracebacks

from fmnist.ci import server as srv
from fmnist.sweep import study as studies

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "rehearsal"


def working_copy(folder: Path, data: Path, sweep: dict) -> Path:
    """The committed tree, its data copied in, params.yaml with the rehearsal's sweep (only `create` reads it)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    for part in ("split", "prepared"):
        shutil.copytree(data / part, folder / "data" / part)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["sweeps"][SWEEP] = sweep
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def rehearsal_sweep(args: argparse.Namespace) -> dict:
    """mlp_cpu's space (params.yaml) at a budget of a few seconds a trial."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())["sweeps"]["mlp_cpu"]
    return {**base, "trials": args.trials, "pruner": {"startup_trials": 4, "warmup_epochs": 1},
            "fixed": {"epochs": args.epochs, "train_subset": args.train_subset, "eval_subset": args.eval_subset}}


def env_for(copy: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FMNIST_SWEEP"))}
    return {**env, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def fmnist(copy: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fmnist.cli", *args], cwd=copy, env=env_for(copy),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fmnist {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done.stdout


STARTED: list[subprocess.Popen] = []  # killed if the rehearsal stops early


def start_worker(copy: Path, study: str, url: str, log: Path) -> subprocess.Popen:
    STARTED.append(subprocess.Popen([sys.executable, "-m", "fmnist.cli", "sweep", "worker", study, "--storage", url,
                             "--threads", "1"], cwd=copy, env=env_for(copy), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True))
    return STARTED[-1]


def kill_left_over() -> None:
    for worker in STARTED:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


class Sweep:
    """One study on the loopback server, as the rehearsal reads it."""

    def __init__(self, name: str, url: str, tracking_uri: str):
        self.name, self.url, self.client = name, url, MlflowClient(tracking_uri)
        self.storage = optuna.storages.RDBStorage(studies.storage_url(url), engine_kwargs={"pool_pre_ping": True})

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=self.name, storage=self.storage).get_trials(deepcopy=False)

    def finished(self) -> set[int]:
        return {t.number for t in self.trials() if t.state in FINISHED}

    def runs(self) -> list:
        experiment = self.client.get_experiment_by_name("fmnist-cpu-sweep")
        if experiment is None:  # no trial has started a run yet
            return []
        return self.client.search_runs([experiment.experiment_id], f"tags.`fmnist.sweep` = '{self.name}'",
                                       max_results=1000)

    def trial_under_way(self, pid: int) -> int | None:
        """The trial number of `pid`'s RUNNING run once it has logged an epoch's validation accuracy."""
        for run in self.runs():
            tags = run.data.tags
            if run.info.status == "RUNNING" and tags.get("fmnist.pid") == str(pid) and "val_acc" in run.data.metrics:
                return int(tags["fmnist.sweep.trial"])
        return None


def wait_for_trial(sweep: Sweep, worker: subprocess.Popen, limit: float = 300) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"worker {worker.pid} exited ({worker.returncode}) before a trial was under way")
        number = sweep.trial_under_way(worker.pid)
        if number is not None:
            return number
        time.sleep(1)
    raise SystemExit(f"worker {worker.pid}: no trial under way after {limit:.0f} s")


def restart_postgres(pgdata: Path, port: int, down_s: float) -> float:
    """Fast shutdown (every connection dropped), `down_s` down, started again: seconds it did not answer."""
    began = time.monotonic()
    srv.stop_postgres(pgdata)
    time.sleep(down_s)
    srv.start_postgres(pgdata, port)
    return time.monotonic() - began


def faults(args: argparse.Namespace, copies: list[Path], server: srv.Server, url: str, logs: Path) -> dict:
    fmnist(copies[0], "sweep", "create", SWEEP, "--study", "faults", "--storage", url, "--tracking-uri",
           server.tracking_uri, "--heartbeat", str(args.heartbeat))
    sweep = Sweep("faults", url, server.tracking_uri)
    events: list[str] = []
    began = time.monotonic()

    def event(text: str) -> None:
        events.append(f"{time.monotonic() - began:5.0f} s  {text}")
        print(events[-1], file=sys.stderr, flush=True)

    with LoadSampler() as load:
        workers = [start_worker(c, "faults", url, logs / f"faults-{i}.log") for i, c in enumerate(copies)]
        event(f"4 workers started (pids {', '.join(str(w.pid) for w in workers)})")
        killed = wait_for_trial(sweep, workers[0])
        os.killpg(workers[0].pid, signal.SIGKILL)
        event(f"worker 0 SIGKILLed during trial {killed}")
        stopped = wait_for_trial(sweep, workers[1])
        os.killpg(workers[1].pid, signal.SIGSTOP)
        event(f"worker 1's process group SIGSTOPped during trial {stopped} (left stopped until the others are done)")
        while len(sweep.finished()) < args.restart_after:
            time.sleep(1)
        before = sweep.finished()
        under_way = [t.number for t in sweep.trials() if t.state == TrialState.RUNNING]
        event(f"PostgreSQL stopped: {len(before)} trials finished, RUNNING: {under_way}")
        down = restart_postgres(Path(server.dir) / "pgdata", server.pg_port, args.down)
        after = sweep.finished()
        event(f"PostgreSQL started again after {down:.1f} s: {len(after)} trials finished")
        exits = {i: workers[i].wait(timeout=args.timeout) for i in (2, 3)}
        done = sweep.finished()
        event(f"workers 2 and 3 exited ({exits[2]}, {exits[3]}): {len(done)} trials finished")
        exits[1] = resume(workers[1])
        event(f"worker 1 continued (SIGCONT): exited {exits[1]}; finished trials changed: "
              f"{sorted(sweep.finished() ^ done) or 'none'}")
        workers[0].wait()
    wall = time.monotonic() - began
    trials = sweep.trials()
    return {"events": events, "wall_s": round(wall, 1), "load": load.shown(), "killed_trial": killed,
            "stopped_trial": stopped, "down_s": round(down, 1), "finished_before_restart": len(before),
            "finished_just_after_restart": len(after),
            "lost_after_restart": sorted(n for n in before if trials[n].state not in FINISHED),
            "running_at_restart": under_way, "exits": exits, "tracebacks": tracebacks(logs, "faults"),
            "outage_lines": outage_lines(logs),
            **tally(trials, sweep.runs())}


def resume(worker: subprocess.Popen, limit: float = 120) -> int | str:
    """The frozen worker continued once its trial has been retried elsewhere: it must go on, not crash."""
    os.killpg(worker.pid, signal.SIGCONT)
    try:
        return worker.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        return f"still running after {limit:.0f} s: SIGKILLed"


def scaling(args: argparse.Namespace, copies: list[Path], server: srv.Server, url: str, logs: Path, k: int) -> dict:
    name = f"scale{k}"
    fmnist(copies[0], "sweep", "create", SWEEP, "--study", name, "--storage", url, "--tracking-uri",
           server.tracking_uri, "--heartbeat", str(args.heartbeat))
    sweep = Sweep(name, url, server.tracking_uri)
    with LoadSampler() as load:
        began = time.monotonic()
        workers = [start_worker(copies[i], name, url, logs / f"{name}-{i}.log") for i in range(k)]
        exits = [w.wait(timeout=args.timeout) for w in workers]
        wall = time.monotonic() - began
    trials = sweep.trials()
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.state in FINISHED]
    complete = [s for t, s in zip([t for t in trials if t.state in FINISHED], seconds)
                if t.state == TrialState.COMPLETE]
    print(f"{k} workers: {wall:.0f} s, load {load.shown()}", file=sys.stderr, flush=True)
    return {"workers": k, "wall_s": round(wall, 1), "load": load.shown(), "exits": exits,
            "trial_s_mean": round(statistics.fmean(seconds), 1),
            "complete_trial_s_mean": round(statistics.fmean(complete), 1) if complete else None,
            "trial_s_sum": round(sum(seconds), 1), "tracebacks": tracebacks(logs, name),
            **tally(trials, sweep.runs())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data", help="a folder with the pipeline's split/ and prepared/")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-subset", type=int, default=40000)
    p.add_argument("--eval-subset", type=int, default=3000)
    p.add_argument("--heartbeat", type=int, default=3, help="seconds; a trial silent for 3 heartbeats is dead")
    p.add_argument("--restart-after", type=int, default=6, help="finished trials before PostgreSQL is restarted")
    p.add_argument("--down", type=float, default=5.0, help="seconds PostgreSQL stays down")
    p.add_argument("--scaling", default="1,2,4", help="worker counts timed without faults ('' for none)")
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--timeout", type=float, default=900, help="seconds a phase's workers may take")
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, copies)")
    args = p.parse_args()
    needed = [args.data / "split/train.npz", args.data / "split/val.npz", args.data / "prepared/test.npz"]
    if missing := [str(f) for f in needed if not f.is_file()]:
        raise SystemExit(f"{', '.join(missing)}: missing; run `dvc repro split` first, or give --data a folder with "
                         "the pipeline's split/ and prepared/")
    folder = Path(tempfile.mkdtemp(prefix="fmnist-sweep-rehearsal-"))
    os.chmod(folder, 0o755)  # PostgreSQL runs as its own user when we are root
    print(f"working in {folder}", file=sys.stderr)
    logs = folder / "logs"
    logs.mkdir()
    sweep = rehearsal_sweep(args)
    copies = [working_copy(folder / f"copy{i}", args.data.resolve(), sweep) for i in range(4)]
    server = srv.start(folder / "server", port=srv.free_port(), pg_port=srv.free_port())
    url = f"postgresql://{srv.DB_USER}@127.0.0.1:{server.pg_port}/sweeps"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=copies[0], capture_output=True,
                            text=True).stdout.strip()
    result = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"), "heartbeat_s": args.heartbeat,
              "recipe": f"mlp, {args.trials} trials of {args.epochs} epochs on {args.train_subset} images, "
                        f"{args.eval_subset} validation images, one torch thread per worker",
              "load_before": os.getloadavg(), "faults": None, "scaling": []}
    try:
        if not args.no_faults:
            result["faults"] = faults(args, copies, server, url, logs)
        for k in [int(x) for x in args.scaling.split(",") if x]:
            result["scaling"].append(scaling(args, copies, server, url, logs, k))
    finally:
        kill_left_over()
        srv.stop(folder / "server")
        result["load_after"] = os.getloadavg()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1, default=str))
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(markdown(result))


if __name__ == "__main__":
    main()
