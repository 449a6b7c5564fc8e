"""MLflow system metrics on every training run: CPU, memory, disk and network, and GPU utilisation and memory
where NVML answers (nvidia-ml-py), so "why was this epoch slow?" has an answer in the run itself.

The switch is an environment variable, not a param: it changes what is observed, not what is trained, so
turning it off must not make every train stage stale. FMNIST_SYSTEM_METRICS holds the sampling interval in
seconds (default 10; docs/tracking.md gives the measured cost), `off` (or 0) turns it off.
"""

from __future__ import annotations

import os

import mlflow

from fmnist.core.errors import ConfigError

ENV = "FMNIST_SYSTEM_METRICS"
DEFAULT_SECONDS = 10.0
OFF = {"off", "0", "false", "no"}
TAG = "fmnist.system_metrics"


def sampling_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between samples, or None when switched off; a value that is neither is a one-line error."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    if not raw:
        return DEFAULT_SECONDS
    if raw in OFF:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 1:  # below a second the monitor's own store reads cost more than they tell
        raise ConfigError(f"{ENV}={raw!r} is not a sampling interval: set it to seconds >= 1 (e.g. 10) or to off")
    return seconds


def prepare(environ: dict[str, str] | None = None) -> tuple[bool, dict[str, str]]:
    """Set MLflow's sampling interval for the next run; returns whether to log and the tag saying how."""
    seconds = sampling_interval(environ)
    if seconds is None:
        return False, {TAG: "off"}
    mlflow.set_system_metrics_sampling_interval(seconds)
    mlflow.set_system_metrics_samples_before_logging(1)
    return True, {TAG: f"every {seconds:g} s"}
