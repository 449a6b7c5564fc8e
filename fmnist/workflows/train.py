"""Train one architecture: plan the run, load its data, fit with its trainer inside a tracked MLflow
run, and write the stage's outputs (checkpoint, pointer file, summary, history)."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fmnist import tracking
from fmnist.core.config import RecipeRun
from fmnist.core.io import atomic_write_text, file_sha256, read_json, write_json
from fmnist.core.runs import (
    RunPointer,
    RunSummary,
    history_csv,
    read_pointer,
    read_summary,
    write_pointer,
    write_summary,
)
from fmnist.core.seeds import PRIMARY_TAG, SEED_GROUP_TAG, SeedSpread
from fmnist.models.wrapper import pixels_to_input
from fmnist.tracking.journal import Journal, JournaledRunLog, OutagePolicy, journal_path, send_left_over
from fmnist.tracking.stale import close_run, gone_reason, is_stale, stale_runs
from fmnist.tracking.store import store_errors
from fmnist.training.checkpoint import CHECKPOINT_FILE, save_checkpoint
from fmnist.training.plan import RunPlan, plan_run, seeds_of
from fmnist.training.resume import SavedState, StateWriter, clear_state, load_state, run_key, save_state, state_path
from fmnist.training.runtime import seed_everything
from fmnist.training.trainers import FitData, Resumable
from fmnist.workflows.fit_data import TrainPaths, load_fit_data
from fmnist.workflows.outputs import WORK_DIR, check_writable, exclusive, replace_dir, staging_dir

log = logging.getLogger("fmnist")
SEEDS_DIR = "seeds"  # in the stage's model folder: one folder per seed after the first


def train_architecture(run: RecipeRun, paths: TrainPaths, root: Path = Path("."),
                       resume: bool | None = None) -> RunSummary:
    """Plan and check everything, take the output folder for this process alone, then train once per seed
    of the budget (resuming an interrupted run of the same recipe, data, code and seed unless `resume` or
    train.resume is false). The first seed's model is the stage's; the summary file adds the seeds' spread."""
    plans = [plan_run(run, seed) for seed in seeds_of(run)]  # every check, before any work
    arch = run.name
    first = plans[0]
    check_writable(paths.model_dir / CHECKPOINT_FILE, paths.metrics_file, paths.history_file, staging_root=root)
    tracking.configure(root)  # the store: reachable and readable, before any work
    OutagePolicy.from_env()  # FMNIST_OUTAGE_LIMIT_S, FMNIST_OUTAGE_PROBE_S checked before any work too
    tracking.system.sampling_interval()  # a bad FMNIST_SYSTEM_METRICS is said before any work
    resume = first.train.resume if resume is None else resume
    group = f"{arch}-{uuid.uuid4().hex[:12]}"
    with exclusive(paths.model_dir, root):
        if first.train.threads:
            torch.set_num_threads(first.train.threads)
        # Later seeds first, each into a stash outside DVC's outputs; the first seed last, whose finished folder
        # takes them in before it replaces models/ARCH: a failure anywhere leaves the last good outputs as they were.
        stashes = {plan.seed: seed_stash(root, paths.model_dir, plan.seed) for plan in plans[1:]}
        others = []
        for number, plan in enumerate([*plans[1:], first], start=1):
            if len(plans) > 1:
                log.info("%s: seed %d (%d of %d)", arch, plan.seed, number, len(plans))
            tags = {SEED_GROUP_TAG: group, PRIMARY_TAG: str(plan is first).lower()}
            seed_everything(plan.seed, plan.train.deterministic)
            if plan is not first:
                others.append(train_later_seed(plan, paths.for_seed(stashes[plan.seed]), root, resume, tags))
                continue
            data = load_fit_data(plan, paths)
            summary = run_training(plan, data, paths, root, resume, tags, SeedOutputs(stashes, others))
        if stashes:
            shutil.rmtree(next(iter(stashes.values())).parent, ignore_errors=True)
        return summary


@dataclass(frozen=True)
class SeedOutputs:
    """The later seeds' finished outputs that the first seed's stage folder takes in."""

    stashes: dict[int, Path]  # seed -> folder with model/, summary.json, history.csv
    summaries: list[RunSummary]


def seed_stash(root: Path, model_dir: Path, seed: int) -> Path:
    """Where a later seed's finished outputs wait (ignored by git and DVC) until the first seed is done."""
    return root / WORK_DIR / "seeds" / state_path(root, model_dir).stem / str(seed)


def train_later_seed(plan: RunPlan, paths: TrainPaths, root: Path, resume: bool, tags: dict[str, str]) -> RunSummary:
    """Train one later seed into its stash, or reuse it when an earlier start of the stage finished it with the
    same recipe, data and code (and its MLflow run is FINISHED)."""
    data = load_fit_data(plan, paths)
    hashed = {k: file_sha256(p) for k, p in paths.inputs().items()}  # once: the data files are large
    key = _run_key(plan, data, paths, hashed)[2]
    done_file = paths.model_dir.parent / "done.json"
    if resume and done_file.is_file():
        done = read_json(done_file)
        with store_errors(mlflow.get_tracking_uri()):
            finished = done.get("key") == key and _not_resumable(MlflowClient(), done["run_id"]) == "already finished"
        if finished:
            MlflowClient().set_tag(done["run_id"], SEED_GROUP_TAG, tags[SEED_GROUP_TAG])  # one group with the others
            log.info("%s: seed %d was finished by an earlier start (MLflow run %s): reused", plan.arch, plan.seed,
                     done["run_id"])
            return read_summary(paths.metrics_file)
    done_file.unlink(missing_ok=True)
    summary = run_training(plan, data, paths, root, resume, tags, key=_run_key(plan, data, paths, hashed))
    write_json(done_file, {"key": key, "run_id": read_pointer(paths.model_dir).run_id})
    return summary


def _run_key(plan: RunPlan, data: FitData, paths: TrainPaths,
             data_hashes: dict[str, str] | None = None) -> tuple[dict, dict, dict]:
    """(logged params, data hashes, the resume key): what makes two trainings the same one."""
    data_hashes = data_hashes or {k: file_sha256(p) for k, p in paths.inputs().items()}
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    logged = plan.logged_params(sizes)
    return logged, data_hashes, run_key(logged, data_hashes)


def _saved_state(plan: RunPlan, key: dict, state_file: Path, resume: bool, client: MlflowClient,
                 experiment: str) -> SavedState | None:
    """The state to resume, if any, with one line saying what happens; stale runs of this architecture
    on this host are resumed (the saved state's) or closed as KILLED (every other)."""
    saved, note = (load_state(state_file, key) if resume
                   else (None, "resume is off (train.resume: false or --no-resume): starting at epoch 1"))
    if saved is not None:
        problem = _not_resumable(client, saved.run_id)
        if problem:
            saved, note = None, f"the saved state's MLflow run {saved.run_id} {problem}: starting afresh"
    log.info("%s: %s", plan.arch, note)
    exp = client.get_experiment_by_name(experiment)
    for run in stale_runs(client, [exp.experiment_id] if exp else None, plan.arch):
        if run.data.params.get("seed", str(plan.seed)) != str(plan.seed):
            continue  # another seed's: its own start resumes or closes it
        if saved is None or run.info.run_id != saved.run_id:
            close_run(client, run, gone_reason(run) + "; closed by the next start of its stage")
            log.info("%s: closed stale MLflow run %s as KILLED (%s)", plan.arch, run.info.run_id, gone_reason(run))
    return saved


def _not_resumable(client: MlflowClient, run_id: str) -> str | None:
    """Why the saved state's run cannot be continued, or None if it can."""
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return "is not in this store"
        raise
    if run.info.lifecycle_stage != "active":
        return "was deleted"
    if run.info.status == "FINISHED":
        return "already finished"
    if run.info.status == "RUNNING" and not is_stale(run):
        return "is still RUNNING in a live process"
    return None


def run_training(plan: RunPlan, data: FitData, paths: TrainPaths, root: Path = Path("."),
                 resume: bool = True, extra_tags: dict[str, str] | None = None,
                 seeds: SeedOutputs | None = None, key: tuple[dict, dict, dict] | None = None) -> RunSummary:
    logged, data_hashes, key = key or _run_key(plan, data, paths)
    state_file = state_path(root, paths.model_dir)
    journal = Journal(journal_path(state_file))
    with store_errors(mlflow.get_tracking_uri()):
        send_left_over(journal)  # what an earlier start logged while the server was away, before anything new
        saved = _saved_state(plan, key, state_file, resume, MlflowClient(), plan.experiment)
    tags = tracking.base_tags(f"train@{plan.arch}", data_hashes, root)
    tags.update(tracking.environment_tags(str(plan.device)))
    tags.update({"arch": plan.arch, "network": plan.info.name, "profile": plan.profile, "kind": plan.info.kind.value,
                 **(extra_tags or {})})
    staged = staging_dir(root, plan.arch)
    try:
        run_name = plan.arch if plan.seed == plan.train.seed else f"{plan.arch} seed {plan.seed}"
        with tracking.tracked_run(plan.experiment, run_name=run_name, tags=tags, root=root,
                                  resume_run_id=saved.run_id if saved else None, system_metrics=True) as run:
            run_id = run.info.run_id
            tracking.log_params(logged)
            if saved is not None:
                tracking.log_missing_epochs(run_id, saved.fitter["history"])
            # The state is written while the next epoch trains; the writer waits for the last write on the way
            # out, also on an error, so a crash after epoch k leaves epoch k's state behind.
            with StateWriter() as writer:
                resumable = Resumable(
                    {"fitter": saved.fitter, "extra": saved.extra} if saved else None,
                    lambda fitter, extra: writer.submit(save_state, state_file, key, run_id, fitter, extra))
                run_log = JournaledRunLog(run_id, journal, OutagePolicy.from_env())
                trained = plan.trainer.fit(plan, data, run_log, staged, resumable)
            run_log.drain()  # the outputs below need the server: wait for it (up to the outage limit)
            write_outputs(plan, data, trained, paths, staged, run_id, seeds)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    clear_state(state_file)
    journal.clear()
    return trained.summary


def write_outputs(plan: RunPlan, data: FitData, trained, paths: TrainPaths, staged: Path, run_id: str,
                  seeds: SeedOutputs | None = None) -> None:
    """Log the model and results, take in the later seeds' folders, then move the finished model folder into
    place by rename; the history and the summary follow, each written atomically. The stage's own run (given
    `seeds`, none for a later seed's) adds the spread over all its seeds to the summary."""
    mlflow.log_metrics(trained.summary.metrics())
    mlflow.set_tags(trained.summary.tags())
    save_checkpoint(staged / CHECKPOINT_FILE, arch=plan.arch, network=plan.info.name, model_kwargs=plan.model_options,
                    num_classes=len(data.class_names), class_names=data.class_names, run_id=run_id,
                    **trained.checkpoint)
    example = pixels_to_input(data.val.x[:4]).numpy()
    tracking.log_classifier(trained.classifier, example, requirements=trained.requirements)
    history = history_csv(trained.history)
    mlflow.log_text(history, "history.csv")
    write_pointer(staged, RunPointer(run_id=run_id, experiment=plan.experiment, arch=plan.arch,
                                     tracking_uri=mlflow.get_tracking_uri(), early_stopping=plan.stop_rule,
                                     test_subset_size=plan.recipe.eval_subset, test_subset_seed=plan.train.seed))
    for seed, stash in (seeds.stashes if seeds else {}).items():
        target = staged / SEEDS_DIR / str(seed)
        target.parent.mkdir(exist_ok=True)
        os.replace(stash / "model", target)
        for name in ("summary.json", "history.csv"):
            os.replace(stash / name, target / name)
    replace_dir(staged, paths.model_dir)
    atomic_write_text(paths.history_file, history)
    if seeds is None:
        write_summary(paths.metrics_file, trained.summary)
    else:
        spread = SeedSpread.of([trained.summary, *seeds.summaries])
        mlflow.log_metrics(spread.metrics())
        write_json(paths.metrics_file, {**trained.summary.to_dict(), **spread.to_dict()})
