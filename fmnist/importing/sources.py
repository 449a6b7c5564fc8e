"""Where `fmnist runs import` reads runs from: a bundle of run records (a folder or a .tar.gz of one), or
another MLflow store (a SQLite file or URI, a file-store folder, a tracking server). Each is recognised and
checked here, before the import writes anything."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Metric
from mlflow.exceptions import MlflowException

from fmnist.core.errors import StoreError
from fmnist.offline.records import ARTIFACTS_DIR, MANIFEST, Bundle, RunRecord
from fmnist.tracking.store import check_store, sqlite_path

KINDS = ("a bundle folder or its .tar.gz, an MLflow database (.db or sqlite:///...), an mlruns folder, or an "
         "http(s):// tracking URI")


@dataclass
class SourceRun:
    """A run as its source holds it: what the import writes, less the metrics, artifacts and models."""

    origin_id: str
    experiment: str
    name: str | None
    status: str
    start_time: int
    end_time: int | None
    params: dict[str, str]
    tags: dict[str, str]
    metric_keys: list[str] = field(default_factory=list)
    experiment_id: str | None = None  # at the source


class Source:
    uri: str  # where it is, to refuse importing a store into itself
    name: str  # the stable name every imported run's ORIGIN_STORE_TAG holds

    def __init__(self, given: str):
        self.given = given

    def error(self, problem: str) -> StoreError:
        return StoreError(f"{self.given}: {problem}")


class BundleSource(Source):
    def __init__(self, given: str, root: Path):
        super().__init__(given)
        self.bundle = Bundle(root)
        manifest = self.bundle.manifest()
        self.uri, self.name = Path(given).resolve().as_uri(), f"bundle {manifest.get('host')} {manifest.get('created')}"
        self._records: dict[str, RunRecord] = {}

    def runs(self, experiment: str | None) -> list[SourceRun]:
        records = list(self.bundle.records())
        for record in records:
            if not isinstance(record.experiment, str) or not record.experiment:
                raise self.error(f"run {record.run_id} names no experiment; the bundle is damaged")
        chosen = [r for r in records if experiment in (None, r.experiment)]
        if experiment and not chosen:
            names = ", ".join(sorted({r.experiment for r in records})) or "(none)"
            raise self.error(f"no run of experiment '{experiment}'; its experiments: {names}")
        self._records = {r.run_id: r for r in chosen}
        return sorted((SourceRun(r.run_id, r.experiment, r.run_name, r.status, r.start_time, r.end_time, r.params,
                                 r.tags) for r in chosen), key=lambda run: run.start_time)

    def metrics(self, run: SourceRun) -> list:
        return self._records[run.origin_id].metrics

    def artifacts(self, run: SourceRun, tmp: Path) -> Path | None:  # noqa: ARG002 (already on disk)
        folder = self.bundle.run_dir(run.origin_id) / ARTIFACTS_DIR
        return folder if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")) else None

    def checkpoint(self, run: SourceRun) -> Path | None:
        path = self.bundle.checkpoint_file(run.origin_id)
        return path if path.is_file() else None


class StoreSource(Source):
    def __init__(self, given: str, uri: str):
        super().__init__(given)
        self.uri = self.name = uri
        self.client = MlflowClient(tracking_uri=uri)  # reads only; the global tracking URI stays the target

    def runs(self, experiment: str | None) -> list[SourceRun]:
        experiments = self.client.search_experiments()
        chosen = [e for e in experiments if experiment in (None, e.name)]
        if experiment and not chosen:
            names = ", ".join(e.name for e in experiments) or "(none)"
            raise self.error(f"no experiment '{experiment}' in this store; its experiments: {names}")
        runs = [self._source_run(run, exp.name) for exp in chosen for run in self._all_runs(exp.experiment_id)]
        return sorted(runs, key=lambda run: run.start_time)

    def _all_runs(self, experiment_id: str) -> Iterator:
        token = None
        while True:
            page = self.client.search_runs([experiment_id], max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    @staticmethod
    def _source_run(run, experiment: str) -> SourceRun:
        info, data = run.info, run.data
        return SourceRun(info.run_id, experiment, info.run_name, info.status, info.start_time, info.end_time,
                         dict(data.params), dict(data.tags), sorted(data.metrics), info.experiment_id)

    def metrics(self, run: SourceRun) -> list[Metric]:
        return [m for key in run.metric_keys for m in self.client.get_metric_history(run.origin_id, key)]

    def artifacts(self, run: SourceRun, tmp: Path) -> Path | None:
        if not self.client.list_artifacts(run.origin_id):
            return None
        return Path(self.client.download_artifacts(run.origin_id, "", str(tmp)))

    def copy_models(self, run: SourceRun, target: MlflowClient, run_id: str) -> str | None:
        """MLflow 3 keeps a logged model beside the run, not in its artifacts: each finished one is copied
        file for file (so its recorded SHA-256 still holds) and linked to the imported run. Returns the
        weights tag to set: "logged", None (the run logged no model), or why they stayed behind."""
        try:
            models = [m for m in self.client.search_logged_models(
                [run.experiment_id], filter_string=f"source_run_id = '{run.origin_id}'") if m.status == "READY"]
        except MlflowException:  # a store that keeps no logged models (a file store): any model is an artifact
            return None
        outputs = self.client.get_run(run.origin_id).outputs
        steps = {output.model_id: output.step for output in (outputs.model_outputs if outputs else None) or []}
        experiment_id = target.get_run(run_id).info.experiment_id
        for model in models:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=tmp,
                                                            tracking_uri=self.uri)
                copy = target.create_logged_model(experiment_id, name=model.name, source_run_id=run_id,
                                                  tags=model.tags, params=model.params, model_type=model.model_type)
                target.log_model_artifacts(copy.model_id, local)
            target.finalize_logged_model(copy.model_id, "READY")
            target.log_outputs(run_id, [LoggedModelOutput(copy.model_id, steps.get(model.model_id, 0))])
        return "logged" if models else None


@contextlib.contextmanager
def open_source(given: str) -> Iterator[Source]:
    """The source `given` names, recognised and checked; a .tar.gz is extracted for as long as it is read."""
    if given.startswith(("http://", "https://")):
        check_store(given)
        yield StoreSource(given, given.rstrip("/"))
        return
    path = _path_of(given)
    if not path.exists():
        raise StoreError(f"{given}: no such file or folder; give {KINDS}")
    if path.is_dir():
        with _folder_source(given, path) as source:
            yield source
    elif path.name.endswith((".tar.gz", ".tgz")):
        with _extracted(given, path) as root:
            yield BundleSource(given, root)
    elif _is_sqlite(path):
        _check_mlflow_tables(given, path)
        yield StoreSource(given, f"sqlite:///{path.resolve()}")
    else:
        raise StoreError(f"{given}: neither a .tar.gz bundle nor an SQLite database; give {KINDS}")


def _path_of(given: str) -> Path:
    if given.startswith("sqlite:///"):
        return sqlite_path(given)
    if given.startswith("file:"):
        return Path(unquote(urlparse(given).path))
    return Path(given).expanduser()


@contextlib.contextmanager
def _folder_source(given: str, path: Path) -> Iterator[Source]:
    if (path / MANIFEST).is_file():
        yield BundleSource(given, path)
    elif any(path.glob("*/meta.yaml")):
        with _file_store_allowed():
            yield StoreSource(given, path.resolve().as_uri())
    else:
        raise StoreError(f"{given}: a folder that is neither a bundle (no {MANIFEST}) nor an MLflow file store (no "
                         f"experiment folders with meta.yaml); give {KINDS}")


@contextlib.contextmanager
def _file_store_allowed() -> Iterator[None]:
    """MLflow 3 refuses file stores unless asked: reading one to import it is the way off it."""
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


@contextlib.contextmanager
def _extracted(given: str, path: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fmnist-import-") as tmp:
        try:
            with tarfile.open(path, "r:gz") as tar:
                members = tar.getmembers()
                for member in members:
                    if member.name.startswith("/") or ".." in Path(member.name).parts:
                        raise StoreError(f"{given}: member {member.name!r} would land outside the bundle, so "
                                         "nothing is extracted; make the archive with relative paths (tar -C)")
                    if not (member.isfile() or member.isdir()):
                        raise StoreError(f"{given}: member {member.name!r} is a link or device, which a bundle "
                                         "never holds; make the archive from the bundle folder alone")
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise StoreError(f"{given}: not a readable .tar.gz ({err}); copy it again, or give the folder") from None
        yield _bundle_root(Path(tmp))


def _bundle_root(folder: Path) -> Path:
    """The archive's top level, or the one folder in it (`tar czf b.tar.gz bundle/`)."""
    entries = list(folder.iterdir())
    if not (folder / MANIFEST).is_file() and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _check_mlflow_tables(given: str, path: Path) -> None:
    """Opening a database without MLflow's tables would create them: refuse it instead."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{given}: not a readable SQLite database ({err}); copy it again") from None
    if not {"experiments", "runs"} <= tables:
        raise StoreError(f"{given}: an SQLite database without MLflow's tables, so not an MLflow store; give the "
                         "mlflow.db the runs were logged to")


def same_store(a: str, b: str) -> bool:
    return _canonical(a) == _canonical(b)


def _canonical(uri: str) -> str:
    if uri.startswith(("sqlite:///", "file:")):
        return str(_path_of(uri).resolve())
    return uri.rstrip("/")

