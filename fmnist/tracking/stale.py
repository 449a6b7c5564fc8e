"""Runs left RUNNING by a process that is gone (killed, crashed, machine lost): found by the host and
pid every run records, then resumed by the next start of their stage or closed as KILLED."""

from __future__ import annotations

import os
import socket

import psutil
from mlflow import MlflowClient
from mlflow.entities import Run

HOST_TAG, PID_TAG, END_REASON_TAG = "fmnist.host", "fmnist.pid", "fmnist.end_reason"


def process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def is_stale(run: Run) -> bool:
    """RUNNING, started on this host, and its process no longer exists."""
    tags = run.data.tags
    if run.info.status != "RUNNING" or tags.get(HOST_TAG) != socket.gethostname():
        return False
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return False
    return pid != os.getpid() and not psutil.pid_exists(pid)


def stale_runs(client: MlflowClient, experiment_ids: list[str] | None = None, arch: str | None = None) -> list[Run]:
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    query = "attributes.status = 'RUNNING'" + (f" and tags.arch = '{arch}'" if arch else "")
    return [run for run in client.search_runs(ids, query, max_results=1000) if is_stale(run)]


def close_run(client: MlflowClient, run: Run, reason: str) -> None:
    client.set_tag(run.info.run_id, END_REASON_TAG, reason)
    client.set_terminated(run.info.run_id, "KILLED")


def gone_reason(run: Run) -> str:
    tags = run.data.tags
    return f"its process (pid {tags.get(PID_TAG)} on {tags.get(HOST_TAG)}) ended without closing the run"
