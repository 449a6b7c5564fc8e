"""Tracking-server outages during a real training (a script, not a test). Prints a Markdown table for
docs/reliability.md.

    python benchmarks/outage.py --data data --outages 20 300 660 --past-limit 150:60

A loopback tracking server (`fmnist server start`: PostgreSQL + `mlflow server`) serves every trial. In each
trial a throw-away copy of the project runs `dvc repro --single-item train@ARCH` against it; once epoch
`--at-epoch` is printed, both server processes are killed (SIGKILL to the MLflow server's process group,
PostgreSQL's immediate stop), and after the outage `fmnist server start` starts them again (it restarts what
died). `--outages` are trials under the default outage limit (30 min); `--past-limit OUTAGE:LIMIT` runs one
with FMNIST_OUTAGE_LIMIT_S=LIMIT, and then `dvc repro` again once the server is back (it must resume).

Per trial: the outage as measured (kill to the server's /health answering again, restarts included), how the
training ended, the one-line notes it printed, urllib3/MLflow warnings (should be 0), epochs trained (the
history file) against epochs in the MLflow run (`val_acc` steps), duplicated steps, and the run's status.
`--data` is a folder holding the pipeline's `prepared/` and `split/` outputs (`dvc repro split`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow import MlflowClient
from reliability import ROOT, env_for, make_project, table

from fmnist.ci import server as srv


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def answers(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def kill_server(folder: Path) -> None:
    """As a crash leaves them: no process gets to clean up."""
    state = srv.status(folder)
    os.killpg(state.pid, signal.SIGKILL)
    subprocess.run(srv._as_postgres([srv.pg_tool("pg_ctl"), "-D", str(folder / "pgdata"), "-m", "immediate",
                                     "stop"]), capture_output=True, check=True)


def fmnist_server_start(folder: Path) -> None:
    """`fmnist server start` on a server that was running: it starts again whatever died. Once more if a
    start outlasted its 2 minutes (a loaded machine): the second start finds what the first got up."""
    for attempt in (1, 2):
        done = subprocess.run([sys.executable, "-m", "fmnist.cli", "server", "start", "--dir", str(folder)],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode == 0:
            return
        print(f"fmnist server start (attempt {attempt}): {done.stderr.strip()}", file=sys.stderr)
    raise SystemExit("the tracking server did not start again")


def repro(repo: Path, arch: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", f"train@{arch}"], cwd=repo,
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_line(log: Path, text: str, process: subprocess.Popen) -> None:
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()[-2000:]
        time.sleep(0.2)


def notes(text: str) -> dict:
    lines = text.splitlines()
    return {"began": sum("unreachable" in ln and "training goes on" in ln for ln in lines),
            "ended": sum("is back after" in ln for ln in lines),
            "noise": sum(("urllib3" in ln or "Retrying" in ln or "mlflow." in ln and "WARNING" in ln) for ln in lines),
            "error": next((ln.strip() for ln in lines if ln.startswith("error:")), "")}


def logged(uri: str, run_id: str) -> tuple[list[int], str]:
    client = MlflowClient(uri)
    return [m.step for m in client.get_metric_history(run_id, "val_acc")], client.get_run(run_id).info.status


def trial(args: argparse.Namespace, folder: Path, uri: str, outage: float, limit: float | None) -> dict:
    budget = {"epochs": args.epochs, "train_subset": args.train_subset, "eval_subset": args.eval_subset}
    repo = make_project(args.data, {args.arch: budget}, [args.arch])
    env = {**env_for(repo), "MLFLOW_TRACKING_URI": uri, "FMNIST_OUTAGE_PROBE_S": str(args.probe),
           "FMNIST_SYSTEM_METRICS": "off"}
    if limit is not None:
        env["FMNIST_OUTAGE_LIMIT_S"] = str(limit)
    resolved = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "resolve"], cwd=repo, env=env,
                              capture_output=True, text=True)
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    log = repo / "first.log"
    process = repro(repo, args.arch, env, log)
    wait_for_line(log, f"{args.arch} epoch {args.at_epoch}/", process)
    kill_server(folder)
    down = time.monotonic()
    time.sleep(outage)
    fmnist_server_start(folder)
    while not answers(uri):
        time.sleep(0.5)
    measured = time.monotonic() - down
    code = process.wait()
    first = notes(log.read_text())
    row = {"outage (s)": f"{measured:.0f}", "limit (s)": f"{limit:g}" if limit else "1800 (default)",
           "first `dvc repro`": "ok" if code == 0 else f"exit {code}",
           "outage lines (began/ended)": f"{first['began']}/{first['ended']}",
           "urllib3/MLflow warnings": first["noise"],
           "second `dvc repro`": "-", "error line": "-"}
    if code != 0:
        again = repo / "second.log"
        code = repro(repo, args.arch, env, again).wait()
        text = again.read_text()
        row["second `dvc repro`"] = ("resumed, ok" if "resuming from the end of epoch" in text and code == 0
                                     else f"exit {code}")
        row["error line"] = first["error"][:200]
    pointer = json.loads((repo / "models" / args.arch / "run.json").read_text())
    steps, status = logged(uri, pointer["run_id"])
    trained = len((repo / "metrics/history" / f"{args.arch}.csv").read_text().splitlines()) - 1
    row.update({"epochs trained": trained, "epochs in MLflow": len(set(steps)),
                "epochs lost": trained - len(set(steps)), "duplicates": len(steps) - len(set(steps)),
                "run status": status})
    shutil.rmtree(repo, ignore_errors=True)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--arch", default="mlp")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--train-subset", type=int, default=12000)
    p.add_argument("--eval-subset", type=int, default=2000)
    p.add_argument("--at-epoch", type=int, default=3, help="the outage begins once this epoch is printed")
    p.add_argument("--probe", type=float, default=15.0, help="FMNIST_OUTAGE_PROBE_S")
    p.add_argument("--outages", type=float, nargs="*", default=[20, 300, 660], help="seconds, default limit")
    p.add_argument("--past-limit", default="150:60", help="OUTAGE:LIMIT seconds, a trial past the limit")
    args = p.parse_args()
    args.data = args.data.resolve()
    folder = Path(tempfile.mkdtemp(prefix="fmnist-outage-"))
    os.chmod(folder, 0o755)  # PostgreSQL runs as its own user when we are root
    ports = {"port": srv.free_port(), "pg_port": srv.free_port()}
    try:
        server = srv.start(folder / "server", **ports)
    except srv.FmnistError:  # a first start (initdb, MLflow's migrations) can outlast 2 minutes on a loaded machine
        server = srv.start(folder / "server", **ports)
    before = load()
    plan = [(o, None) for o in args.outages]
    if args.past_limit:
        outage, limit = (float(x) for x in args.past_limit.split(":"))
        plan.insert(1, (outage, limit))
    rows = []
    try:
        for outage, limit in plan:
            rows.append(trial(args, folder / "server", server.tracking_uri, outage, limit))
    finally:
        srv.stop(folder / "server")
        shutil.rmtree(folder, ignore_errors=True)
    print(f"`{args.arch}`, {args.epochs} epochs on {args.train_subset} images, outage from the end of epoch "
          f"{args.at_epoch}, probe every {args.probe:g} s (load average before: {before}, after: {load()})\n")
    print(table(rows))


if __name__ == "__main__":
    main()
