"""The CI rehearsal: the retraining workflow played end to end on this machine with real parts.

PostgreSQL and `mlflow server` on loopback (fmnist/ci/server.py), a DVC remote in a local folder, a
bare git repository as the team's origin, a developer's clone, and a fresh clone per CI job (the plan
and report jobs share one, each train job of the matrix has its own and they run at once). The jobs
run our commands (`fmnist ci plan|train|report`), as .github/workflows/retrain.yml does.

Scenario, on a small budget (4 architectures, the `quick` profile cut down):
1. the team's first push to main: every architecture trains, the first champion is registered;
2. a branch makes cnn1's recipe better: only train@cnn1 runs, the gate promotes it; merged to main;
3. a branch makes cnn1 worse: only train@cnn1 runs, the gate keeps the champion.

`python -m fmnist.ci.rehearsal --out FILE` (make ci-rehearsal) writes the transcript; the test marked
`ci_rehearsal` runs the same `rehearse()` and checks every outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

from fmnist.ci import server as srv
from fmnist.ci.plan import DATA_STAGES, stages_to_run
from fmnist.ci.steps import FROM_CACHE
from fmnist.core.config import load_params

ARCHS = ["mlp", "cnn1", "fastcnn", "sk_logreg"]
SMALL = {"mlp": {"epochs": 2, "train_subset": 3000, "eval_subset": 1000},
         "cnn1": {"epochs": 1, "train_subset": 2000, "eval_subset": 1000},
         "fastcnn": {"epochs": 1, "train_subset": 3000, "eval_subset": 1000},
         "sk_logreg": {"train_subset": 2000, "eval_subset": 1000, "model": {"max_iter": 30}}}
BETTER_CNN1 = {"epochs": 3, "train_subset": 12000, "eval_subset": 1000}
WORSE_CNN1 = {"epochs": 1, "train_subset": 600, "eval_subset": 1000}
PROFILE = "quick"  # the scenario's budget: the smallest profile, cut down further by SMALL


@dataclass
class CiRun:
    name: str
    branch: str
    planned: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    comment: str = ""
    restored: dict[str, list[str]] = field(default_factory=dict)  # train job -> stages from the run cache
    rebuilt: dict[str, list[str]] = field(default_factory=dict)  # train job -> data stages it ran itself


class Rehearsal:
    def __init__(self, source: Path, work: Path):
        self.source, self.work = source.resolve(), work.resolve()
        self.origin, self.remote, self.dev = self.work / "origin.git", self.work / "dvc-remote", self.work / "dev"
        self.server: srv.Server | None = None
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, **srv.QUIET, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                    "GIT_AUTHOR_NAME": "rehearsal", "GIT_AUTHOR_EMAIL": "ci@localhost",
                    "GIT_COMMITTER_NAME": "rehearsal", "GIT_COMMITTER_EMAIL": "ci@localhost"}
        self.env.pop("GITHUB_OUTPUT", None)

    def sh(self, *cmd: str, cwd: Path) -> str:
        done = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {cwd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def fmnist(self, *args: str, cwd: Path) -> str:
        return self.sh(sys.executable, "-m", "fmnist.cli", *args, cwd=cwd)

    # -- the team's side --------------------------------------------------------------------------------
    def set_up(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)  # PostgreSQL runs as its own user when we are root: it must reach its folder
        self.server = srv.start(self.work / "server", port=srv.free_port(), pg_port=srv.free_port())
        self.env["MLFLOW_TRACKING_URI"] = self.server.tracking_uri
        self.sh("git", "clone", "-q", "--bare", str(self.source), str(self.origin), cwd=self.work)
        self.sh("git", "clone", "-q", str(self.origin), str(self.dev), cwd=self.work)
        self.sh(sys.executable, "-m", "dvc", "remote", "add", "-d", "team", str(self.remote), cwd=self.dev)
        self.edit_params({"profile": PROFILE, "train_recipes": ARCHS,
                          **{f"recipes.{a}.budgets.quick": budget for a, budget in SMALL.items()}})
        self.commit_and_push("team setup: a DVC remote, four architectures on a small budget", "main")

    def edit_params(self, updates: dict) -> None:
        yaml = YAML()
        path = self.dev / "params.yaml"
        data = yaml.load(path)
        for dotted, value in updates.items():
            *parents, key = dotted.split(".")
            node = data
            for name in parents:
                node = node[name]
            node[key] = value
        with open(path, "w") as fh:
            yaml.dump(data, fh)

    def commit_and_push(self, message: str, branch: str) -> None:
        self.sh("git", "checkout", "-q", "-B", branch, cwd=self.dev)
        self.sh("git", "commit", "-q", "-am", message, cwd=self.dev)
        self.sh("git", "push", "-q", "-f", "origin", branch, cwd=self.dev)

    def start_branch(self, branch: str) -> None:
        self.sh("git", "fetch", "-q", "origin", cwd=self.dev)
        self.sh("git", "checkout", "-q", "-B", branch, "origin/main", cwd=self.dev)

    def merge_to_main(self, branch: str) -> None:
        self.sh("git", "fetch", "-q", "origin", cwd=self.dev)
        self.sh("git", "checkout", "-q", "-B", "main", "origin/main", cwd=self.dev)
        self.sh("git", "merge", "-q", "--ff-only", f"origin/{branch}", cwd=self.dev)
        self.sh("git", "push", "-q", "origin", "main", cwd=self.dev)

    # -- the CI's side ----------------------------------------------------------------------------------
    def fresh_clone(self, branch: str, name: str) -> Path:
        path = self.work / name
        self.sh("git", "clone", "-q", "--branch", branch, str(self.origin), str(path), cwd=self.work)
        return path

    def ci(self, name: str, branch: str) -> CiRun:
        run = CiRun(name, branch)
        runner = self.fresh_clone(branch, f"{name}-runner")
        started = time.monotonic()
        run.planned = json.loads(self.fmnist("ci", "plan", cwd=runner).strip().splitlines()[-1])
        run.seconds["plan"] = time.monotonic() - started
        bundles = self.work / f"{name}-bundles"
        started = time.monotonic()
        jobs = []
        for arch in run.planned:  # the matrix: one fresh runner per architecture, all at once
            clone = self.fresh_clone(branch, f"{name}-train-{arch}")
            log = open(self.work / f"{name}-train-{arch}.log", "w")
            jobs.append((arch, log, subprocess.Popen(
                [sys.executable, "-m", "fmnist.cli", "ci", "train", arch, "--bundle", str(bundles)],
                cwd=clone, env=self.env, stdout=log, stderr=subprocess.STDOUT)))
        for arch, log, proc in jobs:
            code = proc.wait()
            log.close()
            if code != 0:
                raise RuntimeError(f"train job {arch} failed; see {log.name}")
            text = Path(log.name).read_text()
            run.restored[arch] = FROM_CACHE.findall(text)
            run.rebuilt[arch] = [s for s in stages_to_run(text) if s in DATA_STAGES]
        run.seconds["train (matrix)"] = time.monotonic() - started
        started = time.monotonic()
        comment = self.work / f"{name}-comment.md"
        base = "origin/main"
        out = self.fmnist("ci", "report", str(bundles), "--comment", str(comment), "--base", base,
                          "--commit", f"ci: results of {name} [skip ci]", "--push", branch, cwd=runner)
        run.seconds["report"] = time.monotonic() - started
        run.report = json.loads(out.strip().splitlines()[-1])
        run.report["gate"] = json.loads((runner / "reports" / "champion.json").read_text())["gate"]
        run.comment = comment.read_text()
        return run

    # -- checks on the server ---------------------------------------------------------------------------
    def runs_on_server(self) -> list[dict]:
        from mlflow import MlflowClient

        client = MlflowClient(self.server.tracking_uri)
        found = []
        for experiment in client.search_experiments():
            for r in client.search_runs([experiment.experiment_id], max_results=1000):
                epochs = int(r.data.metrics.get("epochs_run", 0))
                history = len(client.get_metric_history(r.info.run_id, "val_acc")) if epochs else 0
                found.append({"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
                              "stage": r.data.tags.get("fmnist.stage", ""), "epochs_run": epochs,
                              "val_acc_points": history, "start": r.info.start_time / 1000,
                              "end": (r.info.end_time or 0) / 1000})
        return found

    def champion(self) -> dict:
        from mlflow import MlflowClient

        registered = load_params(self.dev / "params.yaml").registered_model
        version = MlflowClient(self.server.tracking_uri).get_model_version_by_alias(registered, "champion")
        return {"version": int(version.version), "run_id": version.run_id, "arch": version.tags.get("arch")}

    def tear_down(self) -> None:
        if self.server is not None:
            srv.stop(Path(self.server.dir))
            self.server = None


def rehearse(source: Path, work: Path) -> dict:
    """The whole scenario; returns what happened (the test checks it, the transcript prints it)."""
    r = Rehearsal(source, work)
    started = time.monotonic()
    try:
        r.set_up()
        first = r.ci("ci-1-main", "main")
        first_runs = r.runs_on_server()
        champion_1 = r.champion()
        r.start_branch("better-cnn1")
        r.edit_params({"recipes.cnn1.budgets.quick": BETTER_CNN1})
        r.commit_and_push("cnn1: three epochs on 12,000 images", "better-cnn1")
        second = r.ci("ci-2-better-cnn1", "better-cnn1")
        champion_2 = r.champion()
        r.merge_to_main("better-cnn1")
        r.start_branch("worse-cnn1")
        r.edit_params({"recipes.cnn1.budgets.quick": WORSE_CNN1})
        r.commit_and_push("cnn1: one epoch on 600 images", "worse-cnn1")
        third = r.ci("ci-3-worse-cnn1", "worse-cnn1")
        champion_3 = r.champion()
        all_runs = r.runs_on_server()
    finally:
        r.tear_down()
    return {"runs": [first, second, third], "first_runs": first_runs, "all_runs": all_runs,
            "champions": [champion_1, champion_2, champion_3], "seconds": time.monotonic() - started}


def transcript(result: dict) -> str:
    lines = ["# CI rehearsal transcript", "",
             f"Wall time {result['seconds']:.0f} s. Champion after each CI run: "
             + "; ".join(f"version {c['version']} ({c['arch']}, run `{c['run_id']}`)" for c in result["champions"]),
             ""]
    for run in result["runs"]:
        gate = run.report["gate"]
        lines += [f"## {run.name} (branch `{run.branch}`)", "",
                  f"- plan: out-of-date train stages: {', '.join(run.planned) or 'none'}",
                  "- timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in run.seconds.items()),
                  "- train jobs restored from the run cache: " + "; ".join(
                      f"{arch}: {', '.join(stages) or 'nothing'}" for arch, stages in run.restored.items()),
                  "- train jobs ran data stages themselves: " + "; ".join(
                      f"{arch}: {', '.join(stages) or 'none'}" for arch, stages in run.rebuilt.items()),
                  f"- report job ran: {', '.join(run.report['ran']) or 'nothing'}; restored from the run cache: "
                  f"{', '.join(run.report['from_run_cache']) or 'nothing'}",
                  f"- gate: {gate['decision']}: {gate['reason']}", "", "The comment file:", "", "```markdown",
                  run.comment.strip(), "```", ""]
    trainings = sorted((r for r in result["first_runs"] if r["stage"].startswith("train@")), key=lambda r: r["start"])
    t0 = min((r["start"] for r in trainings), default=0)
    lines += ["## Trainings logged at once to the PostgreSQL-backed server (CI run 1)", "",
              "| run | status | epochs | val_acc points logged | started (s) | ended (s) |",
              "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['status']} | {r['epochs_run']} | {r['val_acc_points']} | {r['start'] - t0:.1f} | "
              f"{r['end'] - t0:.1f} |" for r in trainings]
    left = [r for r in result["all_runs"] if r["status"] == "RUNNING"]
    lines += ["", f"Runs on the server at the end: {len(result['all_runs'])}; left RUNNING: {len(left)}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path(".fmnist/rehearsal"), help="scratch folder (emptied first)")
    p.add_argument("--out", type=Path, default=Path("docs/ci_rehearsal.md"))
    args = p.parse_args()
    if args.work.exists():
        import shutil

        shutil.rmtree(args.work)
    result = rehearse(Path("."), args.work)
    args.out.write_text(transcript(result))
    print(f"rehearsal done in {result['seconds']:.0f} s; transcript in {args.out}")


if __name__ == "__main__":
    main()
