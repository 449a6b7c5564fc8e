"""What MLflow's system metrics cost a training run on this machine, for choosing FMNIST_SYSTEM_METRICS.

Two measures:
1. per sample: the CPU time (thread time) and wall time of one pass of the monitor's loop body (collect CPU,
   memory, disk, network; read the run's status from the store; write the batch), timed N times against an
   embedded SQLite store. CPU ms per sample / interval is the share of one core the monitor takes.
2. end to end: the train stage's whole process (stages/train.py --arch RECIPE on the quick budget, into a
   temporary store) with the monitor off and on, alternated, with the load beside it.

Usage: python benchmarks/bench_system_metrics.py [--samples 200] [--pairs 3] [--interval 10] [--recipe mlp]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def per_sample_cost(samples: int) -> tuple[float, float]:
    """Mean CPU ms and wall ms of one monitor loop pass (collect, status read, publish, flush)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        with mlflow.start_run() as run:
            monitor = SystemMetricsMonitor(run.info.run_id, sampling_interval=10)
            client = MlflowClient()
            monitor.collect_metrics()  # first psutil calls prime their counters
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            for _ in range(samples):
                monitor.collect_metrics()
                client.get_run(run.info.run_id)
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()  # an upper bound: MLflow batches writes, we write every sample
            return ((time.thread_time() - cpu0) * 1000 / samples, (time.perf_counter() - wall0) * 1000 / samples)


def timed_training(recipe: str, setting: str, workdir: Path) -> float:
    """Seconds of one training of RECIPE on the quick budget through the train stage, system metrics per SETTING."""
    env = {**os.environ, "FMNIST_SYSTEM_METRICS": setting, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    model_dir = workdir / f"model-{setting}"
    cmd = [sys.executable, "stages/train.py", "--arch", recipe, "--set", "profile=quick", "--no-resume",
           "--model-dir", str(model_dir), "--metrics", str(model_dir / "m.json"),
           "--history", str(model_dir / "h.csv")]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--pairs", type=int, default=0, help="end-to-end trainings on/off, alternated (0: skip)")
    p.add_argument("--recipe", default="mlp")
    p.add_argument("--interval", default="10")
    args = p.parse_args()
    load = os.getloadavg()
    cpu_ms, wall_ms = per_sample_cost(args.samples)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"one sample ({args.samples} timed): {cpu_ms:.2f} ms CPU, {wall_ms:.2f} ms wall")
    for interval in (1, 5, 10, 30):
        print(f"  at every {interval:>2} s: {cpu_ms / (interval * 1000):.4%} of one core")
    if args.pairs:
        with tempfile.TemporaryDirectory() as tmp:
            on, off = [], []
            for _ in range(args.pairs):
                off.append(timed_training(args.recipe, "off", Path(tmp)))
                on.append(timed_training(args.recipe, args.interval, Path(tmp)))
            print(f"{args.recipe} quick budget, {args.pairs} pairs: off {sorted(round(s, 1) for s in off)} s, "
                  f"every {args.interval} s {sorted(round(s, 1) for s in on)} s; load now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
