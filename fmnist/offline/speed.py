"""A speed-run attempt made where MLflow is missing, as run records: the parent run of the attempt and a child
run per seed, with the keys `fmnist speedrun` logs to MLflow, so the import makes them the same runs."""

from __future__ import annotations

from fmnist.core.config import RecipeRun, to_flat_dict
from fmnist.offline.records import Bundle, RunRecord
from fmnist.offline.trainer import STAGE_TAG, environment_tags
from fmnist.training.speedrun import GROUP_TAG, Attempt, SpeedResult


def record_attempt(bundle: Bundle, run: RecipeRun, attempt: Attempt, commit: str) -> str:
    """The attempt into the bundle; returns the parent's run id."""
    import torch

    tags = {STAGE_TAG: f"speedrun@{run.name}", "arch": run.name, "network": run.recipe.network,
            "profile": run.profile, GROUP_TAG: f"{run.name}-{bundle.manifest()['created']}", "git_commit": commit,
            "mlflow.source.git.commit": commit, **environment_tags(torch.device(attempt.device))}
    parent = RunRecord(f"{run.experiment}-speedrun", f"speedrun {run.name}")
    parent.set_tags(tags)
    parent.log_params({**{f"recipe.{k}": v for k, v in to_flat_dict(run.recipe).items()}, "data": attempt.data,
                       "n_train": attempt.n_train, "seeds": ",".join(str(r.seed) for r in attempt.results)})
    parent.log_metrics({**attempt.summary(), "wall_seconds": attempt.wall_seconds})
    for result in attempt.results:
        bundle.save(_seed_record(parent, result, tags))
    parent.end("FINISHED")
    bundle.save(parent)
    (bundle.artifact_dir(parent.run_id) / "speedrun.md").write_text(attempt.table())
    return parent.run_id


def _seed_record(parent: RunRecord, result: SpeedResult, tags: dict[str, str]) -> RunRecord:
    child = RunRecord(parent.experiment, f"seed {result.seed}")
    child.set_tags({**tags, "mlflow.parentRunId": parent.run_id})
    child.log_params({"seed": result.seed})
    for e in result.epochs:
        child.log_metrics({"train_loss": e.train_loss, "train_acc": e.train_acc, "lr": e.lr,
                           "cumulative_seconds": e.seconds}, step=e.epoch)
    child.log_metrics({"speedrun_seconds": result.seconds, "speedrun_test_acc": result.test_acc,
                       "speedrun_test_loss": result.test_loss})
    child.end("FINISHED")
    return child
