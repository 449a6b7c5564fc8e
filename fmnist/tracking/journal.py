"""A training's logging that outlives an outage of its tracking server.

What a trainer logs while it fits (per-epoch metrics, params, artifacts) is first appended to a journal on
disk beside the training's saved state (`.fmnist/state/<output folder>.journal/`), then sent in order; an
offset file records how far the store has acknowledged it. When a send fails because the store cannot be
reached, the training goes on: one line says the outage began, entries wait in the journal, the server is
probed every `probe_s` seconds, and once it answers the backlog is sent in order and one line says the outage
ended. Past `limit_s` seconds of outage the training ends with one line (`OutageTooLong`); its saved state and
the journal stay, and the next start of the stage sends the journal first, then resumes.

Sending again is harmless: a metric keeps the timestamp it was journaled with, and MLflow's SQL stores skip a
metric identical in (key, step, timestamp, value); params go again with the same values, and an artifact
overwrites its own path. An entry the store took but whose answer was lost is therefore not duplicated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from fmnist.core.errors import ConfigError, StoreError
from fmnist.core.io import atomic_write_text
from fmnist.core.runs import EpochRecord
from fmnist.tracking.store import check_store, is_store_failure

log = logging.getLogger("fmnist")
LIMIT_ENV, PROBE_ENV = "FMNIST_OUTAGE_LIMIT_S", "FMNIST_OUTAGE_PROBE_S"
DEFAULT_LIMIT_S, DEFAULT_PROBE_S = 1800.0, 15.0

# For the journal's own sends: a server that is down costs a training about 3 s (refused) or 30 s (no answer at
# all) once, at the outage's start, instead of MLflow's default of 7 retries over about 4 minutes, 120 s each.
SHORT_BUDGET = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
PARAMS_PER_CALL = 100  # MLflow's log_batch limit


@dataclass(frozen=True)
class OutagePolicy:
    """How long a training waits for its tracking server (`limit_s`) and how often it asks (`probe_s`)."""

    limit_s: float = DEFAULT_LIMIT_S
    probe_s: float = DEFAULT_PROBE_S

    @classmethod
    def from_env(cls) -> OutagePolicy:
        return cls(_seconds(LIMIT_ENV, DEFAULT_LIMIT_S), _seconds(PROBE_ENV, DEFAULT_PROBE_S))


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name}={raw!r}: expected a positive number of seconds (e.g. {default:g}); fix or unset it")
    return value


class OutageTooLong(StoreError):
    """The tracking server stayed unreachable past the policy's limit: the training stops, resumable."""


class Journal:
    """An append-only file of JSON entries, each flushed to disk before it is sent, and the offset up to which
    the store has acknowledged them; artifacts are copied in, since their files may be gone when they are sent."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._entries = self.folder / "entries.jsonl"
        self._acked = self.folder / "acked"
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        """A line cut short by a crash was never sent: drop it, so the next entry starts a line of its own."""
        if not self._entries.is_file():
            return
        data = self._entries.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self._entries, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def append(self, entry: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._entries, "ab") as fh:
            fh.write((json.dumps(entry, sort_keys=True) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())

    def keep(self, path: Path) -> Path:
        """A copy of an artifact's file inside the journal, there until the journal is cleared."""
        files = self.folder / "files"
        files.mkdir(parents=True, exist_ok=True)
        folder = files / str(sum(1 for _ in files.iterdir()))  # one folder per artifact: names may repeat
        folder.mkdir()
        return Path(shutil.copy2(path, folder / Path(path).name)).resolve()

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        """The entries not yet acknowledged, in order, each with the offset that acknowledges it."""
        if not self._entries.is_file():
            return []
        offset = self.acked_offset()
        entries = []
        for line in self._entries.read_bytes()[offset:].splitlines(keepends=True):
            offset += len(line)
            entries.append((offset, json.loads(line)))
        return entries

    def acked_offset(self) -> int:
        return int(self._acked.read_text()) if self._acked.is_file() else 0

    def ack(self, offset: int) -> None:
        atomic_write_text(self._acked, str(offset))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def journal_path(state_file: Path) -> Path:
    """Beside the saved state it belongs to: one journal per output folder, as one state."""
    return state_file.with_name(state_file.stem + ".journal")


def send(client: MlflowClient, entry: dict[str, Any]) -> None:
    run_id, kind = entry["run_id"], entry["kind"]
    if kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(key, float(value), entry["timestamp"], entry["step"])
                                          for key, value in entry["metrics"].items()])
    elif kind == "params":
        params = [Param(key, value) for key, value in entry["params"].items()]
        for start in range(0, len(params), PARAMS_PER_CALL):
            client.log_batch(run_id, params=params[start:start + PARAMS_PER_CALL])
    elif kind == "artifact":
        client.log_artifact(run_id, entry["file"], entry["dir"])
    else:
        raise ValueError(f"unknown journal entry kind {kind!r}")


def is_outage(err: BaseException) -> bool:
    """The store could not be reached or could not answer (as opposed to refusing what was sent)."""
    import requests

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (requests.exceptions.RequestException, OSError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return is_store_failure(err)


class _Quiet(logging.Filter):
    """Drops the retry warnings of urllib3 and MLflow's system-metrics thread while an outage is already said."""

    def __init__(self) -> None:
        super().__init__()
        self.holds = 0

    def filter(self, record: logging.LogRecord) -> bool:
        return self.holds == 0


_QUIET = _Quiet()
for _name in ("urllib3.connectionpool", "mlflow.system_metrics.system_metrics_monitor"):
    logging.getLogger(_name).addFilter(_QUIET)


@contextlib.contextmanager
def quick_calls() -> Iterator[None]:
    """MLflow calls made inside get the short retry budget and keep their retry warnings to themselves."""
    saved = {name: os.environ.get(name) for name in SHORT_BUDGET}
    os.environ.update(SHORT_BUDGET)
    _QUIET.holds += 1
    try:
        yield
    finally:
        _QUIET.holds -= 1
        for name, value in saved.items():  # only these: MLflow changes others meanwhile (end_run unsets its run id)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def server_answers(uri: str) -> bool:
    try:
        check_store(uri)  # a server's /health within seconds; a SQLite file readable
    except StoreError:
        return False
    return True


def _reason(err: BaseException) -> str:
    """The cause in a few words (`[Errno 111] Connection refused`), not urllib3's paragraph around it."""
    text = str(err)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+|too many \d+ error responses|timed out", text)
    return found.group(0) if found else text.splitlines()[0][:120]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class JournaledRunLog:
    """The `RunLog` of a training whose tracking server may be down for a while: every call is journaled on
    disk, then sent with a short retry budget; while the server is down the training goes on."""

    def __init__(self, run_id: str, journal: Journal, policy: OutagePolicy | None = None, uri: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_id, self.journal = run_id, journal
        self.policy = policy or OutagePolicy.from_env()
        self.uri = uri or mlflow.get_tracking_uri()
        self.client = MlflowClient(self.uri)
        self.clock = clock
        self.down_since: float | None = None
        self.next_probe = 0.0

    def params(self, flat: dict[str, Any]) -> None:
        self._record({"kind": "params", "params": {k: ("null" if v is None else str(v)) for k, v in flat.items()}})

    def epoch(self, record: EpochRecord) -> None:
        self._record({"kind": "metrics", "step": record.epoch, "timestamp": int(time.time() * 1000),
                      "metrics": record.metrics()})

    def artifact(self, path: Path, artifact_dir: str) -> None:
        self._record({"kind": "artifact", "file": str(self.journal.keep(path)), "dir": artifact_dir})

    def _record(self, entry: dict[str, Any]) -> None:
        self.journal.append({"run_id": self.run_id, **entry})
        self.flush()

    def flush(self) -> bool:
        """Send what the journal holds if the server answers; True when nothing is left to send. Raises
        OutageTooLong once the server has been down for longer than the policy allows."""
        if self.down_since is not None:
            if self.clock() < self.next_probe or not server_answers(self.uri):
                self._wait_on()
                return False
        tried_at = self.clock()
        try:
            with quick_calls():
                for offset, entry in self.journal.pending():
                    send(self.client, entry)
                    self.journal.ack(offset)
        except MlflowException as err:
            if not is_outage(err):
                raise
            self._outage(err, tried_at)
            return False
        if self.down_since is not None:
            log.warning("tracking server %s is back after %s: the journal is sent, logging goes on", self.uri,
                        _duration(self.clock() - self.down_since))
            self.down_since = None
            _QUIET.holds -= 1
        return True

    def drain(self) -> None:
        """Wait (up to the policy's limit) until the server holds everything: the outputs that follow need it."""
        if self.flush():
            return
        left = self.policy.limit_s - (self.clock() - self.down_since)
        log.warning("training done; waiting up to %s for the tracking server to take its results", _duration(left))
        while not self.flush():
            time.sleep(max(0.0, self.next_probe - self.clock()))

    def _outage(self, err: BaseException, tried_at: float) -> None:
        if self.down_since is None:
            self.down_since = tried_at
            reason = _reason(err)
            log.warning("tracking server %s unreachable (%s): training goes on, logging into %s, for up to %s",
                        self.uri, reason, self.journal.folder, _duration(self.policy.limit_s))
            _QUIET.holds += 1  # other threads' retries (system metrics) say nothing more until it ends
        self._wait_on()

    def _wait_on(self) -> None:
        """Stay in the outage until the next probe, or end the training once it lasted past the limit."""
        down_for = self.clock() - self.down_since
        if down_for > self.policy.limit_s:
            self.down_since = None
            _QUIET.holds -= 1
            raise OutageTooLong(
                f"the tracking server {self.uri} has not answered for {_duration(down_for)}, past the limit "
                f"({LIMIT_ENV}={self.policy.limit_s:g} s): training stopped; its state and the "
                f"{len(self.journal.pending())} entries not yet sent are kept ({self.journal.folder}); its run "
                f"{self.run_id} is FAILED if the server answered just now, else RUNNING until the next start "
                "resumes it (or `fmnist runs --close` closes it): run the stage again once the server is back")
        self.next_probe = self.clock() + self.policy.probe_s


def send_left_over(journal: Journal) -> None:
    """An earlier start's journal (a crash, or an outage past the limit): sent before anything new, then cleared."""
    pending = journal.pending()
    if pending:
        client = MlflowClient()
        try:
            for offset, entry in pending:
                send(client, entry)
                journal.ack(offset)
        except MlflowException as err:
            if is_outage(err):
                raise
            log.warning("the journal %s could not be sent (%s): its %d entries are dropped", journal.folder,
                        str(err).splitlines()[0][:160], len(journal.pending()))
        else:
            log.info("sent %d entries an earlier start had journaled while the tracking server was away (%s)",
                     len(pending), journal.folder)
    journal.clear()
