"""Run records: a run written where MLflow is not installed (an air-gapped GPU node), in files that
`fmnist runs import` turns into ordinary MLflow runs. No torch, no MLflow.

A bundle is a folder (or a .tar.gz of one):

    manifest.json                    {"format": RECORD_FORMAT, "created": ..., "host": ..., "note": ...}
    runs/<run_id>/run.json           one RunRecord
    runs/<run_id>/artifacts/...      files logged as the run's artifacts, at the same relative paths
    runs/<run_id>/checkpoint/model.pt  the weights (a save_checkpoint file), when they came back

MLflow writes the run's artifacts; only what MLflow itself would be given is recorded here, so the
import is a replay: params, tags, every metric with its step and time, the status, start and end.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fmnist.core.errors import OutputError
from fmnist.core.io import atomic_write_text

RECORD_FORMAT = "fmnist-run-records/1"
MANIFEST = "manifest.json"
RUNS_DIR = "runs"
RUN_FILE = "run.json"
ARTIFACTS_DIR = "artifacts"
CHECKPOINT_DIR = "checkpoint"
# Tags every imported run carries: where it was recorded, under which id, and where its weights are.
ORIGIN_RUN_TAG = "fmnist.origin.run_id"
ORIGIN_STORE_TAG = "fmnist.origin.store"
WEIGHTS_TAG = "fmnist.weights"  # "logged", or "left behind: <why>" (the registry then says so)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Metric:
    key: str
    value: float
    timestamp: int  # ms since the epoch, as MLflow stores it
    step: int = 0


@dataclass
class RunRecord:
    experiment: str
    run_name: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "RUNNING"  # FINISHED, FAILED, KILLED once ended
    start_time: int = field(default_factory=now_ms)
    end_time: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)

    def log_params(self, params: dict[str, Any]) -> None:
        for key, value in params.items():
            self.params[key] = "null" if value is None else str(value)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        stamp = now_ms()
        self.metrics.extend(Metric(k, float(v), stamp, step) for k, v in metrics.items())

    def end(self, status: str = "FINISHED") -> None:
        self.status, self.end_time = status, now_ms()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        data["metrics"] = [Metric(**m) for m in data.get("metrics", [])]
        return cls(**data)


class Bundle:
    """A folder of run records, written one run at a time (each run.json atomically, after every change
    that matters), so a bundle cut short by a killed command still holds every finished epoch."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def create(self, note: str = "", **facts: Any) -> Bundle:
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            atomic_write_text(manifest, json.dumps({"format": RECORD_FORMAT, "created": now_ms(),
                                                    "host": socket.gethostname(), "note": note, **facts},
                                                   indent=1))
        return self

    def run_dir(self, run_id: str) -> Path:
        return self.root / RUNS_DIR / run_id

    def artifact_dir(self, run_id: str, artifact_path: str = "") -> Path:
        folder = self.run_dir(run_id) / ARTIFACTS_DIR / artifact_path
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def checkpoint_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / CHECKPOINT_DIR / "model.pt"

    def save(self, record: RunRecord) -> Path:
        path = self.run_dir(record.run_id) / RUN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, json.dumps(record.to_dict(), indent=1))

    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.is_file():
            raise OutputError(f"{self.root}: no {MANIFEST}, so not a bundle of run records; give the folder (or "
                              ".tar.gz) the offline command wrote")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != RECORD_FORMAT:
            raise OutputError(f"{path}: format {manifest.get('format')!r}, this fmnist reads {RECORD_FORMAT!r}; "
                              "import it with the fmnist version that wrote it")
        return manifest

    def records(self) -> Iterator[RunRecord]:
        self.manifest()
        for path in sorted((self.root / RUNS_DIR).glob(f"*/{RUN_FILE}")):
            try:
                yield RunRecord.from_dict(json.loads(path.read_text()))
            except (ValueError, TypeError) as err:
                raise OutputError(f"{path}: not a readable run record ({err}); the bundle is damaged") from None


class RecordLog:
    """The `RunLog` a trainer reports to (trainers.RunLog), into a run record instead of MLflow."""

    def __init__(self, bundle: Bundle, record: RunRecord):
        self.bundle, self.record = bundle, record

    def params(self, flat: dict[str, Any]) -> None:
        self.record.log_params(flat)
        self.bundle.save(self.record)

    def epoch(self, record) -> None:  # an EpochRecord
        self.record.log_metrics(record.metrics(), step=record.epoch)
        self.bundle.save(self.record)

    def artifact(self, path: Path, artifact_dir: str) -> None:
        target = self.bundle.artifact_dir(self.record.run_id, artifact_dir) / Path(path).name
        target.write_bytes(Path(path).read_bytes())

    def text(self, text: str, artifact_file: str) -> None:
        file = Path(artifact_file)
        atomic_write_text(self.bundle.artifact_dir(self.record.run_id, str(file.parent)) / file.name, text)
