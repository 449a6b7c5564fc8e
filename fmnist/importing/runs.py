"""`fmnist runs import`: runs made elsewhere (a bundle of run records, or another MLflow store) copied into
the configured store as ordinary runs, once.

Every imported run carries the id it had at its source and the source's name; the tag COMPLETE_TAG is set
last, so a run without it is an import that was cut short, and the next import replaces it. Run ids that a
run's params or tags mention (a report's `run_id.ARCH`, `mlflow.parentRunId`) are rewritten to the imported
runs' ids, so the runs still point at each other. Reading the source comes first, writing second: a source
that cannot be read is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag

from fmnist.importing.sources import BundleSource, Source, SourceRun, open_source, same_store
from fmnist.offline.records import ORIGIN_RUN_TAG, ORIGIN_STORE_TAG, WEIGHTS_TAG
from fmnist.tracking import configure, ensure_experiment, log_classifier
from fmnist.tracking.stale import END_REASON_TAG

COMPLETE_TAG = "fmnist.import.complete"
ORIGIN_PARENT_TAG = "fmnist.origin.parent_run_id"  # a parent that was not imported: its id at the source
PARENT_TAG = "mlflow.parentRunId"
# Tags describing the source's copy of something, set afresh here if at all.
NOT_COPIED = ("mlflow.log-model.history", COMPLETE_TAG, ORIGIN_RUN_TAG, ORIGIN_STORE_TAG)
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # MLflow's log_batch limits
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
ClassifierLoader = Callable[[Path], tuple[Any, Any]]  # checkpoint file -> (classifier, input example)


@dataclass
class ImportSummary:
    source: str
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"imported": 0, "already imported": 0,
                                                            "replaced an incomplete import": 0})

    def add(self, outcome: str, run: SourceRun, run_id: str, echo: Callable[[str], None]) -> None:
        self.counts[outcome] += 1
        self.lines.append(f"{outcome}: {run.experiment}/{run.name or '-'} {run.origin_id} -> {run_id}")
        echo(self.lines[-1])

    def describe(self) -> str:
        total = sum(self.counts.values())
        return f"{total} runs from {self.source}: " + ", ".join(f"{n} {what}" for what, n in self.counts.items())


def import_runs(source: str, experiment: str | None = None, load_classifier: ClassifierLoader | None = None,
                echo: Callable[[str], None] = print, root: str | Path = ".") -> ImportSummary:
    """Import every run of `source` (or of its `experiment`) into the store `configure(root)` names."""
    with open_source(source) as src:
        runs = src.runs(experiment)  # read and checked before the target is touched
        target = configure(root)
        if same_store(src.uri, target):
            raise src.error(f"is the tracking store being imported into ({target}); import another store, or "
                            "set MLFLOW_TRACKING_URI to the store that should receive the runs")
        return _import(src, runs, MlflowClient(), load_classifier, echo)


def _import(src: Source, runs: list[SourceRun], client: MlflowClient, load_classifier: ClassifierLoader | None,
            echo: Callable[[str], None]) -> ImportSummary:
    summary = ImportSummary(src.name)
    earlier = imported_runs(client, src.name)
    ids = {r.data.tags[ORIGIN_RUN_TAG]: r.info.run_id for r in earlier if is_complete(r)}
    cut_short = {r.data.tags[ORIGIN_RUN_TAG]: r.info.run_id for r in earlier if not is_complete(r)}
    todo: list[tuple[SourceRun, str]] = []
    try:
        for run in runs:
            if run.origin_id in ids:
                summary.add("already imported", run, ids[run.origin_id], echo)
                continue
            ids[run.origin_id] = _create(client, src, run)  # every id first: runs name each other
            todo.append((run, "replaced an incomplete import" if run.origin_id in cut_short else "imported"))
        for run, outcome in todo:
            _fill(client, src, run, ids, load_classifier)
            summary.add(outcome, run, ids[run.origin_id], echo)
    except BaseException:
        _delete_unfinished(client, [ids[run.origin_id] for run, _ in todo])  # nothing half-written is left
        raise
    replaced = {old: ids[origin] for origin, old in cut_short.items() if origin in ids}
    _relink(client, [r for r in earlier if is_complete(r)], replaced)
    for old in replaced:
        client.delete_run(old)
    return summary


def imported_runs(client: MlflowClient, store: str) -> list[Run]:
    """The target's live runs imported from `store`, complete or cut short."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    found, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids, f"tags.`{ORIGIN_RUN_TAG}` LIKE '%'", max_results=1000,
                                  page_token=token)
        found += [r for r in page if r.data.tags.get(ORIGIN_STORE_TAG) == store]
        token = page.token
        if not token:
            break
    return found


def is_complete(run) -> bool:
    return run.data.tags.get(COMPLETE_TAG) == "true"


def _create(client: MlflowClient, src: Source, run: SourceRun) -> str:
    experiment_id = ensure_experiment(run.experiment)
    tags = {ORIGIN_RUN_TAG: run.origin_id, ORIGIN_STORE_TAG: src.name}
    return client.create_run(experiment_id, start_time=run.start_time, tags=tags, run_name=run.name).info.run_id


def _fill(client: MlflowClient, src: Source, run: SourceRun, ids: dict[str, str],
          load_classifier: ClassifierLoader | None) -> None:
    run_id = ids[run.origin_id]
    params = [Param(k, remap(v, ids)) for k, v in run.params.items()]
    tags = [RunTag(k, v) for k, v in copied_tags(run.tags, ids).items()]
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for m in src.metrics(run)]
    for chunk in _chunks(params, MAX_PARAMS):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(tags, MAX_TAGS):
        client.log_batch(run_id, tags=chunk)
    for chunk in _chunks(metrics, MAX_METRICS):
        client.log_batch(run_id, metrics=chunk)
    with tempfile.TemporaryDirectory() as tmp:
        folder = src.artifacts(run, Path(tmp))
        if folder is not None:
            client.log_artifacts(run_id, str(folder))
    weights = _copy_model(client, src, run, run_id, load_classifier)
    if weights is not None:
        client.set_tag(run_id, WEIGHTS_TAG, weights)
    _end(client, run, run_id, metrics)
    client.set_tag(run_id, COMPLETE_TAG, "true")  # last: the run is whole


def copied_tags(tags: dict[str, str], ids: dict[str, str]) -> dict[str, str]:
    """The source's tags with run ids rewritten; a parent that was not imported is kept in ORIGIN_PARENT_TAG,
    since `mlflow.parentRunId` must name a run of this store."""
    copied = {remap(k, ids): remap(v, ids) for k, v in tags.items() if k not in NOT_COPIED and k != PARENT_TAG}
    parent = tags.get(PARENT_TAG)
    if parent in ids:
        copied[PARENT_TAG] = ids[parent]
    elif parent:
        copied[ORIGIN_PARENT_TAG] = parent
    return copied


def remap(text: str, ids: dict[str, str]) -> str:
    return RUN_ID.sub(lambda match: ids.get(match.group(0), match.group(0)), text)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _copy_model(client: MlflowClient, src: Source, run: SourceRun, run_id: str,
                load_classifier: ClassifierLoader | None) -> str | None:
    """The run's model: a bundle's checkpoint logged as the model, or a store's logged models copied.
    Returns the WEIGHTS_TAG value to set (None: leave the source's)."""
    if isinstance(src, BundleSource):
        checkpoint = src.checkpoint(run)
        if checkpoint is None or load_classifier is None:
            return run.tags.get(WEIGHTS_TAG, "left behind: not in the bundle")
        model, example = load_classifier(checkpoint)
        with mlflow.start_run(run_id=run_id):  # log_classifier logs into the active run
            log_classifier(model, example)
        return "logged"
    return src.copy_models(run, client, run_id)


def _end(client: MlflowClient, run: SourceRun, run_id: str, metrics: list[Metric]) -> None:
    """The source's status and end; a run that never ended there (its process was killed) ends KILLED
    at its last metric, since nothing will continue it here."""
    status, end = run.status, run.end_time
    if status not in ("FINISHED", "FAILED", "KILLED"):
        client.set_tag(run_id, END_REASON_TAG, f"it was {status} at its source when imported")
        status = "KILLED"
    if end is None:
        end = max([run.start_time, *(m.timestamp for m in metrics)])
    client.set_terminated(run_id, status, end_time=end)


def _delete_unfinished(client: MlflowClient, run_ids: list[str]) -> None:
    for run_id in run_ids:
        with contextlib.suppress(Exception):  # the store may be what failed: the next import replaces them
            if not is_complete(client.get_run(run_id)):
                client.delete_run(run_id)


def _relink(client: MlflowClient, runs: list[Run], replaced: dict[str, str]) -> None:
    """Tags of earlier imports that name a replaced run name its replacement."""
    for run in runs if replaced else []:
        for key, value in run.data.tags.items():
            new_key, new_value = remap(key, replaced), remap(value, replaced)
            if new_key != key:
                client.delete_tag(run.info.run_id, key)
            if (new_key, new_value) != (key, value):
                client.set_tag(run.info.run_id, new_key, new_value)
